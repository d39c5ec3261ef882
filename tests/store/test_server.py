"""ServerStore's collection layout, checked against qdrant-client's models (no Qdrant server runs here)."""

from __future__ import annotations

from qdrant_client import models

from distillkit.store._payload import INDEXED_MIRROR
from distillkit.store.server import payload_indexes


def test_namespace_is_a_tenant_index_and_every_filtered_field_is_indexed() -> None:
    indexes = payload_indexes()

    assert set(indexes) == {"namespace", "fingerprint", INDEXED_MIRROR}
    # The request body qdrant-client sends to PUT /collections/{name}/index (Qdrant's multitenancy setup).
    body = models.CreateFieldIndex(field_name="namespace", field_schema=indexes["namespace"])
    assert body.model_dump(exclude_none=True) == {
        "field_name": "namespace",
        "field_schema": {"type": "keyword", "is_tenant": True},
    }
    assert indexes["fingerprint"] == models.PayloadSchemaType.KEYWORD
    assert indexes[INDEXED_MIRROR] == models.PayloadSchemaType.INTEGER
