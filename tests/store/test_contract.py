"""One contract, both backends: what the router, capture writer and trainer rely on."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from distillkit.errors import ConfigError, EmbedderMismatchError
from distillkit.store import EmbedderInfo, Hit, Point, Store
from distillkit.store.base import SearchQuery

from .conftest import DIM, EMBEDDER, Backend, point, vec


def test_is_a_store(store: Store) -> None:
    assert isinstance(store, Store)
    assert store.embedder == EMBEDDER


def test_identical_vector_scores_one_and_ranks_first(store: Store, rng: np.random.Generator) -> None:
    target = vec(rng)
    points = [point(target, query="target")] + [point(vec(rng)) for _ in range(20)]
    store.upsert(points)

    hits = store.search(target, namespace="ns", limit=5)

    assert len(hits) == 5
    assert all(isinstance(h, Hit) for h in hits)
    assert hits[0].id == points[0].id
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert hits[0].payload["query"] == "target"
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)


def test_scores_are_cosine_similarity(store: Store) -> None:
    a = [1.0] + [0.0] * (DIM - 1)
    b = [1.0, 1.0] + [0.0] * (DIM - 2)
    opposite = [-1.0] + [0.0] * (DIM - 1)
    pb, po = point(b), point(opposite)
    store.upsert([pb, po])

    hits = store.search([x * 3 for x in a], namespace="ns", limit=2)  # length does not matter

    assert [h.id for h in hits] == [pb.id, po.id]
    assert hits[0].score == pytest.approx(1 / math.sqrt(2), abs=1e-5)
    assert hits[1].score == pytest.approx(-1.0, abs=1e-5)


def test_namespaces_never_see_each_other(store: Store, rng: np.random.Generator) -> None:
    v = vec(rng)
    a, b = point(v, namespace="a"), point(v, namespace="b")
    store.upsert([a, b])

    assert [h.id for h in store.search(v, namespace="a", limit=8)] == [a.id]
    assert [h.id for h in store.search(v, namespace="b", limit=8)] == [b.id]
    assert store.search(v, namespace="c", limit=8) == []


def test_fingerprint_filter(store: Store, rng: np.random.Generator) -> None:
    v = vec(rng)
    same, other = point(v, fingerprint="f1"), point(v, fingerprint="f2")
    store.upsert([same, other])

    assert [h.id for h in store.search(v, namespace="ns", fingerprint="f1", limit=8)] == [same.id]
    assert {h.id for h in store.search(v, namespace="ns", limit=8)} == {same.id, other.id}


def test_indexed_filter_follows_set_payload(store: Store, rng: np.random.Generator) -> None:
    v = vec(rng)
    trained, fresh = point(v, indexed=True), point(v, indexed=False)
    store.upsert([trained, fresh])

    assert [h.id for h in store.search(v, namespace="ns", indexed=True, limit=8)] == [trained.id]
    assert [h.id for h in store.search(v, namespace="ns", indexed=False, limit=8)] == [fresh.id]

    store.set_payload([fresh.id], {"indexed": True, "distilled_model": "ft:small"})
    assert {h.id for h in store.search(v, namespace="ns", indexed=True, limit=8)} == {trained.id, fresh.id}
    assert store.search(v, namespace="ns", indexed=False, limit=8) == []

    store.set_payload([trained.id], {"indexed": False})
    assert [h.id for h in store.search(v, namespace="ns", indexed=False, limit=8)] == [trained.id]
    assert store.count(namespace="ns", indexed=True) == 1
    assert [p.id for p in store.scroll(indexed=False)] == [trained.id]


def test_point_without_indexed_tag_counts_as_not_indexed(store: Store, rng: np.random.Generator) -> None:
    p = Point(point(vec(rng)).id, {"namespace": "ns"}, vec(rng))
    store.upsert([p])
    assert store.count(namespace="ns", indexed=False) == 1
    assert store.retrieve([p.id])[0].payload == {"namespace": "ns"}


def test_set_payload_merges_into_exactly_the_given_ids(store: Store, rng: np.random.Generator) -> None:
    points = [point(vec(rng), query=f"q{i}", job_id=None) for i in range(4)]
    store.upsert(points)

    store.set_payload([points[0].id, points[2].id], {"job_id": "job-1", "indexed": True})

    by_id = {p.id: p.payload for p in store.retrieve([p.id for p in points])}
    for i, p in enumerate(points):
        assert by_id[p.id]["query"] == f"q{i}"  # other fields kept
        assert by_id[p.id]["namespace"] == "ns"
        if i in (0, 2):
            assert by_id[p.id]["job_id"] == "job-1" and by_id[p.id]["indexed"] is True
        else:
            assert by_id[p.id]["job_id"] is None and by_id[p.id]["indexed"] is False


def test_upsert_existing_id_replaces_it(store: Store, rng: np.random.Generator) -> None:
    first = point(vec(rng), query="old", extra_field=1)
    store.upsert([first])
    new_vector = vec(rng)
    store.upsert([Point(first.id, {"namespace": "ns", "query": "new", "indexed": True}, new_vector)])

    [again] = store.retrieve([first.id])
    assert again.payload == {"namespace": "ns", "query": "new", "indexed": True}
    assert store.count() == 1
    assert store.search(new_vector, namespace="ns")[0].score == pytest.approx(1.0, abs=1e-5)


def test_retrieve_skips_missing_ids(store: Store, rng: np.random.Generator) -> None:
    p = point(vec(rng), query="hello", messages=[{"role": "user", "content": "hello"}])
    store.upsert([p])

    got = store.retrieve([p.id, point(vec(rng)).id])

    assert [g.id for g in got] == [p.id]
    assert got[0].payload["messages"] == [{"role": "user", "content": "hello"}]
    assert store.retrieve([]) == []
    assert got[0].vector is None


def test_retrieve_gives_the_stored_vectors_when_asked(store: Store, rng: np.random.Generator) -> None:
    v = vec(rng)
    p = point(v)
    store.upsert([p])

    [got] = store.retrieve([p.id], with_vectors=True)

    stored = np.asarray(got.vector, dtype=np.float64)
    unit = np.asarray(v, dtype=np.float64) / np.linalg.norm(v)
    assert stored.shape == (DIM,) and float(stored @ unit / np.linalg.norm(stored)) > 0.9999  # cosine: same direction


def test_scroll_returns_every_page_and_count_is_exact(store: Store, rng: np.random.Generator) -> None:
    vectors = rng.standard_normal((650, DIM))
    points = [
        point(vectors[i].tolist(), namespace="big" if i < 600 else "small", indexed=i % 3 == 0) for i in range(650)
    ]
    for i in range(0, len(points), 64):
        store.upsert(points[i : i + 64])

    scrolled = list(store.scroll(namespace="big", batch_size=256))

    assert sorted(p.id for p in scrolled) == sorted(p.id for p in points[:600])
    assert all(p.vector is None for p in scrolled)
    assert store.count() == 650
    assert store.count(namespace="big") == 600
    assert store.count(namespace="big", indexed=True) == 200
    assert len(list(store.scroll(namespace="big", indexed=True, batch_size=7))) == 200
    assert len(list(store.scroll(batch_size=1000))) == 650
    assert store.count(namespace="nobody") == 0


def test_private_fields_are_never_returned(store: Store, rng: np.random.Generator) -> None:
    v = vec(rng)
    p = point(v, indexed=True)
    store.upsert([p])
    store.set_payload([p.id], {"indexed": False})

    payloads = [
        store.search(v, namespace="ns")[0].payload,
        store.retrieve([p.id])[0].payload,
        next(iter(store.scroll())).payload,
    ]
    for payload in payloads:
        assert not [k for k in payload if k.startswith("_")]
        assert payload["indexed"] is False


def test_search_returns_only_the_asked_fields(store: Store, rng: np.random.Generator) -> None:
    v = vec(rng)
    p = point(v, indexed=False, response={"content": "yes"}, messages=[{"role": "user", "content": "long"}])
    store.upsert([p])

    (hit,) = store.search(v, namespace="ns", indexed=False, fields=("response", "missing"))
    assert hit.id == p.id
    assert hit.payload == {"response": {"content": "yes"}}
    assert "messages" in store.search(v, namespace="ns")[0].payload  # None still means every field


def test_search_batch_answers_each_query_as_search_would_in_order(store: Store, rng: np.random.Generator) -> None:
    v, w = vec(rng), vec(rng)
    a, b = point(v, namespace="a", fingerprint="f1"), point(w, namespace="b", fingerprint="f2", indexed=True)
    store.upsert([a, b, point(v, namespace="a", fingerprint="f2")])
    queries = [
        SearchQuery(np.asarray(w, dtype=np.float32), "b", indexed=True),
        SearchQuery(v, "a", fingerprint="f1"),
        SearchQuery(v, "b", indexed=False),  # b's only point is trained: nothing
        SearchQuery(w, "c"),
    ]
    found = store.search_batch(queries, limit=5, fields=("count",))
    assert [[h.id for h in hits] for hits in found] == [[b.id], [a.id], [], []]
    assert found[1][0].payload == {} and found[0][0].score == pytest.approx(1.0, abs=1e-5)
    for query, hits in zip(queries, found, strict=True):
        alone = store.search(
            query.vector, namespace=query.namespace, fingerprint=query.fingerprint, indexed=query.indexed, limit=5
        )
        assert [h.id for h in hits] == [h.id for h in alone]
    assert store.search_batch([]) == []


def test_search_takes_a_numpy_float32_vector(store: Store, rng: np.random.Generator) -> None:
    v = np.asarray(vec(rng), dtype=np.float32)
    p = point(v.tolist())
    store.upsert([p])
    assert store.search(v, namespace="ns")[0].id == p.id
    with pytest.raises(ValueError, match="dimensions"):
        store.search(np.zeros(DIM + 1, dtype=np.float32), namespace="ns")


def test_callers_cannot_set_private_fields(store: Store, rng: np.random.Generator) -> None:
    with pytest.raises(ValueError, match="reserved"):
        store.upsert([point(vec(rng), _indexed=1)])


def test_wrong_vector_dimension_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="dimensions"):
        store.search([1.0, 2.0], namespace="ns")


def test_records_crud_and_list(store: Store) -> None:
    assert store.get_record("model", "support") is None
    assert store.list_records("model") == {}

    store.put_record("model", "support", {"model": "ft:a", "trained": 10})
    store.put_record("model", "sales", {"model": "ft:b", "trained": 3})
    store.put_record("job", "support", {"id": "job-1", "status": "running"})
    store.put_record("model", "support", {"model": "ft:c", "trained": 20})  # replaces

    assert store.get_record("model", "support") == {"model": "ft:c", "trained": 20}
    assert store.list_records("model") == {
        "support": {"model": "ft:c", "trained": 20},
        "sales": {"model": "ft:b", "trained": 3},
    }
    assert store.list_records("job") == {"support": {"id": "job-1", "status": "running"}}

    store.delete_record("model", "sales")
    store.delete_record("model", "never-existed")
    assert set(store.list_records("model")) == {"support"}
    assert store.get_record("model", "sales") is None
    assert store.count() == 0  # records are not points


def test_lease_semantics(store: Store) -> None:
    assert store.try_lock("train:ns", "proc-a", ttl_s=30)
    assert not store.try_lock("train:ns", "proc-b", ttl_s=30)  # held by another owner
    assert store.try_lock("train:other", "proc-b", ttl_s=30)  # other names are independent
    assert store.try_lock("train:ns", "proc-a", ttl_s=30)  # renew by the holder

    store.release_lock("train:ns", "proc-b")  # not the holder: no effect
    assert not store.try_lock("train:ns", "proc-b", ttl_s=30)

    store.release_lock("train:ns", "proc-a")
    assert store.try_lock("train:ns", "proc-b", ttl_s=30)


def test_expired_lease_lets_another_owner_in(store: Store) -> None:
    assert store.try_lock("train:ns", "proc-a", ttl_s=0.2)
    assert not store.try_lock("train:ns", "proc-b", ttl_s=30)
    time.sleep(0.3)
    assert store.try_lock("train:ns", "proc-b", ttl_s=30)
    assert not store.try_lock("train:ns", "proc-a", ttl_s=30)


def test_reopen_keeps_points_and_records(backend: Backend, rng: np.random.Generator) -> None:
    store = backend.open()
    v = vec(rng)
    p = point(v, indexed=False, query="kept")
    store.upsert([p] + [point(vec(rng)) for _ in range(10)])
    store.set_payload([p.id], {"indexed": True})
    store.put_record("model", "ns", {"model": "ft:x"})

    again = backend.reopen()

    assert again.count() == 11
    [hit] = again.search(v, namespace="ns", indexed=True)
    assert hit.id == p.id and hit.payload["query"] == "kept"
    assert again.get_record("model", "ns") == {"model": "ft:x"}


@pytest.mark.parametrize("other", [EmbedderInfo("another-embedder", DIM), EmbedderInfo("test-embedder", 16)])
def test_reopening_with_another_embedder_is_refused(backend: Backend, other: EmbedderInfo) -> None:
    backend.open().put_record("setting", "x", {"y": 1})

    with pytest.raises(EmbedderMismatchError) as info:
        backend.reopen(other)

    message = str(info.value)
    assert "test-embedder" in message and other.name in message
    assert str(other.dim) in message and "DISTILLKIT_PATH" in message
    assert isinstance(info.value, ConfigError)
    assert backend.reopen().get_record("setting", "x") == {"y": 1}  # nothing lost


def test_close_is_idempotent(store: Store) -> None:
    store.close()
    store.close()
