"""DistillConfig: environment variables, .env files, and errors that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from distillkit import ENV, ConfigError, DistillConfig
from distillkit.config import DEFAULT_BASE_MODEL


def test_defaults() -> None:
    config = DistillConfig.from_env({})
    assert config.path == "./.distillkit"
    assert config.threshold == 0.9
    assert config.namespace == "default"
    assert config.embedder == "minilm"
    assert config.base_model == DEFAULT_BASE_MODEL
    assert config.min_examples >= 10


def test_every_variable_is_read() -> None:
    config = DistillConfig.from_env(
        {
            ENV.PATH: "/tmp/x",
            ENV.THRESHOLD: "0.93",
            ENV.NAMESPACE: "support",
            ENV.EMBEDDER: "openai:text-embedding-3-small",
            ENV.MIN_EXAMPLES: "25",
            ENV.BASE_MODEL: "gpt-4.1-mini-2025-04-14",
            ENV.TRAIN_EVERY: "15m",
            ENV.TRAINING_MODE: "full",
            ENV.JOB_TIMEOUT: "2h",
            ENV.DISTILLED_BASE_URL: "http://localhost:8000/v1",
            ENV.DISTILLED_API_KEY: "sk-distilled-secret",
            ENV.ROUTE: "false",
            ENV.CAPTURE: "yes",
            ENV.QDRANT_URL: "http://qdrant:6333",
            ENV.QDRANT_API_KEY: "qdrant-secret",
            ENV.HOLDOUT: "0.2",
            ENV.HOLDOUT_MIN: "3",
            ENV.PROMOTION_FLOOR: "0.9",
            ENV.MAX_ERROR: "0.02",
            ENV.EXPLORE_RATE: "0",
            ENV.CROSS_CHECK: "neighbours",
            ENV.EDGE_ENGINE: "inline",
            ENV.LOOKUP_TIMEOUT: "20ms",
        }
    )
    assert config.cross_check == "neighbours"
    assert (config.edge_engine, config.lookup_timeout) == ("inline", 0.02)
    assert (DistillConfig().edge_engine, DistillConfig().lookup_timeout) == ("process", 0.05)
    assert DistillConfig.from_env({ENV.CROSS_CHECK: " Off "}).cross_check is None
    assert DistillConfig.from_env({}).cross_check == "nearest"
    assert (config.holdout, config.holdout_min, config.promotion_floor) == (0.2, 3, 0.9)
    assert (config.max_error, config.explore_rate) == (0.02, 0.0)
    assert DistillConfig.from_env({ENV.MAX_ERROR: "off"}).max_error is None
    assert (config.path, config.threshold, config.namespace) == ("/tmp/x", 0.93, "support")
    assert (config.min_examples, config.train_every, config.job_timeout) == (25, 900.0, 7200.0)
    assert (config.training_mode, config.route, config.capture) == ("full", False, True)
    assert config.qdrant_url == "http://qdrant:6333"
    assert "secret" not in repr(config)


@pytest.mark.parametrize(
    ("variable", "value", "accepted"),
    [
        (ENV.THRESHOLD, "1.5", "between 0 and 1"),
        (ENV.THRESHOLD, "high", "number"),
        (ENV.EMBEDDER, "bert", "wordllama, minilm, openai"),
        (ENV.TRAIN_EVERY, "-5", "> 0"),
        (ENV.TRAIN_EVERY, "0", "> 0"),
        (ENV.TRAIN_EVERY, "soon", "30s, 15m"),
        (ENV.MIN_EXAMPLES, "3", ">= 10"),
        (ENV.TRAINING_MODE, "sometimes", "incremental or full"),
        (ENV.ROUTE, "maybe", "true or false"),
        (ENV.FINE_TUNING, "azure", "openai, lora"),
        (ENV.HOLDOUT, "1", "between 0 and 1"),
        (ENV.HOLDOUT_MIN, "0", "integer >= 1"),
        (ENV.PROMOTION_FLOOR, "1.2", "between 0 and 1"),
        (ENV.MAX_ERROR, "0", "between 0 and 1"),
        (ENV.MAX_ERROR, "none", "number"),
        (ENV.MAX_ERROR, "1", "0.05, or off"),
        (ENV.EXPLORE_RATE, "-0.1", "between 0 and 1"),
        (ENV.CROSS_CHECK, "always", "nearest, neighbours or off"),
        (ENV.EDGE_ENGINE, "thread", "process or inline"),
        (ENV.LOOKUP_TIMEOUT, "0", "50ms"),
        (ENV.LOOKUP_TIMEOUT, "5m", "50ms"),
    ],
)
def test_invalid_values_name_the_variable_and_what_it_accepts(variable: str, value: str, accepted: str) -> None:
    with pytest.raises(ConfigError) as error:
        DistillConfig.from_env({variable: value})
    assert error.value.variable == variable
    assert variable in str(error.value)
    assert accepted in str(error.value)


def test_dotenv_file_is_read_without_overriding_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text("DISTILLKIT_NAMESPACE=from-file\nDISTILLKIT_THRESHOLD=0.8\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DISTILLKIT_THRESHOLD", "0.95")
    monkeypatch.delenv("DISTILLKIT_NAMESPACE", raising=False)
    config = DistillConfig.from_env()
    assert config.namespace == "from-file"
    assert config.threshold == 0.95
    monkeypatch.delenv("DISTILLKIT_NAMESPACE")  # load_dotenv wrote it; leave the environment clean


def test_config_is_frozen_and_replace_validates() -> None:
    config = DistillConfig()
    with pytest.raises(AttributeError):
        config.threshold = 0.5  # type: ignore[misc]
    assert config.replace(threshold=0.5).threshold == 0.5
    with pytest.raises(ConfigError):
        config.replace(threshold=-1)


def test_lora_fine_tuning_is_configured_from_the_environment(tmp_path: Path) -> None:
    from distillkit import Distiller
    from distillkit.training import LoRAFineTuningProvider

    environ = {
        ENV.PATH: str(tmp_path / "store"),
        ENV.FINE_TUNING: "lora",
        ENV.BASE_MODEL: "Qwen/Qwen2.5-0.5B-Instruct",
        ENV.LORA_DIR: str(tmp_path / "adapters"),
        ENV.DISTILLED_BASE_URL: "http://gpu-box:8000/v1",
    }
    distiller = Distiller(DistillConfig.from_env(environ))
    try:
        provider = distiller.trainer.fine_tuning_provider
        assert isinstance(provider, LoRAFineTuningProvider)
        assert provider.work_dir == tmp_path / "adapters"
        assert provider.base_model == "Qwen/Qwen2.5-0.5B-Instruct"
        # Adapters are loaded into the server that serves the distilled model.
        assert provider.server is not None and provider.server.base_url == "http://gpu-box:8000/v1"
    finally:
        distiller.close()


def test_lora_fine_tuning_of_an_openai_base_model_names_the_variable_to_set() -> None:
    with pytest.raises(ConfigError) as error:
        DistillConfig.from_env({ENV.FINE_TUNING: "lora"})
    assert error.value.variable == ENV.BASE_MODEL
    assert "Qwen/Qwen2.5-0.5B-Instruct" in str(error.value)
