"""The packaged SmolLM2 student served over HTTP, once per test module (fixtures are built only
where a test asks for them, after each module's own skips for missing extras)."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from distillkit.student import SMOLLM2, StudentServer


@pytest.fixture(scope="module")
def student() -> Iterator[StudentServer]:
    with StudentServer(SMOLLM2, n_ctx=512) as server:
        yield server


@pytest.fixture(scope="module")
def client(student: StudentServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=student.base_url, api_key="unused", max_retries=0)
