"""Embedders load offline, give unit vectors, and leave the host program's logging alone."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from distillkit import ConfigError
from distillkit.routing.embedders import OpenAIEmbedder, WordLlamaEmbedder, make_embedder
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
