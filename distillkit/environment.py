"""The environment variables distillkit reads, and how their text becomes configuration values.

Every variable is a constant of :class:`ENV`; :func:`read_environment` turns an environment into
:class:`~distillkit.config.DistillConfig` field values (validated there), and warns about a
``DISTILLKIT_*`` variable nobody reads. ``docs/configuration.md`` documents the same names (a test
keeps the two in step).
"""

from __future__ import annotations

import difflib
import logging
import math
import re
from collections.abc import Mapping
from typing import Any

from distillkit.errors import ConfigError

__all__ = ["ENV", "parse_duration", "read_environment"]

logger = logging.getLogger("distillkit")


class ENV:
    """Names of the environment variables distillkit reads (a public contract)."""

    PATH = "DISTILLKIT_PATH"
    THRESHOLD = "DISTILLKIT_THRESHOLD"
    NAMESPACE = "DISTILLKIT_NAMESPACE"
    EMBEDDER = "DISTILLKIT_EMBEDDER"
    MIN_EXAMPLES = "DISTILLKIT_MIN_EXAMPLES"
    BASE_MODEL = "DISTILLKIT_BASE_MODEL"
    TRAIN_EVERY = "DISTILLKIT_TRAIN_EVERY"
    TRAINING_MODE = "DISTILLKIT_TRAINING_MODE"
    REPLAY = "DISTILLKIT_REPLAY"
    JOB_TIMEOUT = "DISTILLKIT_JOB_TIMEOUT"
    DISTILLED_BASE_URL = "DISTILLKIT_DISTILLED_BASE_URL"
    DISTILLED_API_KEY = "DISTILLKIT_DISTILLED_API_KEY"
    ROUTE = "DISTILLKIT_ROUTE"
    CAPTURE = "DISTILLKIT_CAPTURE"
    ROUTING_RULE = "DISTILLKIT_ROUTING_RULE"
    NEIGHBOURS = "DISTILLKIT_NEIGHBOURS"
    AGREEMENT_MARGIN = "DISTILLKIT_AGREEMENT_MARGIN"
    VETO_MARGIN = "DISTILLKIT_VETO_MARGIN"
    CROSS_CHECK = "DISTILLKIT_CROSS_CHECK"
    FINE_TUNING = "DISTILLKIT_FINE_TUNING"
    HOLDOUT = "DISTILLKIT_HOLDOUT"
    HOLDOUT_MIN = "DISTILLKIT_HOLDOUT_MIN"
    PROMOTION_FLOOR = "DISTILLKIT_PROMOTION_FLOOR"
    MAX_ERROR = "DISTILLKIT_MAX_ERROR"
    EXPLORE_RATE = "DISTILLKIT_EXPLORE_RATE"
    JUDGE = "DISTILLKIT_JUDGE"
    EXACT_FIELDS = "DISTILLKIT_EXACT_FIELDS"
    PROBATION = "DISTILLKIT_PROBATION"
    LORA_DIR = "DISTILLKIT_LORA_DIR"
    CACHE_DIR = "DISTILLKIT_CACHE_DIR"  # read by the LoRA training process
    # LoRASettings' fields, read by LoRASettings.configured (one variable per field).
    LORA_RANK = "DISTILLKIT_LORA_RANK"
    LORA_ALPHA = "DISTILLKIT_LORA_ALPHA"
    LORA_DROPOUT = "DISTILLKIT_LORA_DROPOUT"
    LORA_TARGET_MODULES = "DISTILLKIT_LORA_TARGET_MODULES"
    LORA_EPOCHS = "DISTILLKIT_LORA_EPOCHS"
    LORA_LEARNING_RATE = "DISTILLKIT_LORA_LEARNING_RATE"
    LORA_BATCH_SIZE = "DISTILLKIT_LORA_BATCH_SIZE"
    LORA_MAX_LENGTH = "DISTILLKIT_LORA_MAX_LENGTH"
    LORA_MAX_BATCH_TOKENS = "DISTILLKIT_LORA_MAX_BATCH_TOKENS"
    LORA_STOP_EXACT = "DISTILLKIT_LORA_STOP_EXACT"
    LORA_THREADS = "DISTILLKIT_LORA_THREADS"
    LORA_SEED = "DISTILLKIT_LORA_SEED"
    LORA_DEVICE = "DISTILLKIT_LORA_DEVICE"
    EDGE_ENGINE = "DISTILLKIT_EDGE_ENGINE"
    LOOKUP_TIMEOUT = "DISTILLKIT_LOOKUP_TIMEOUT"
    QDRANT_URL = "QDRANT_URL"
    QDRANT_API_KEY = "QDRANT_API_KEY"


_DURATION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: str | float, *, variable: str) -> float:
    """Seconds from ``90``, ``"90"``, ``"90s"``, ``"15m"``, ``"1h"`` or ``"1d"``.

    Raises:
        ConfigError: for anything else, or a negative duration.
    """
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(value)
        if not match:
            raise ConfigError(
                f"{variable}={value!r} is not a duration.",
                variable=variable,
                fix="Use seconds or a number with a unit: 30s, 15m, 1h, 1d.",
            )
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds < 0 or math.isnan(seconds):
        raise ConfigError(f"{variable}={value!r} is negative.", variable=variable, fix="Use a duration > 0.")
    return seconds


def read_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """:class:`~distillkit.config.DistillConfig` field values from ``environ`` (unset variables are left out).

    Raises:
        ConfigError: a value is not of its kind (a number, a duration, a boolean).
    """
    _warn_unknown(environ)
    values: dict[str, Any] = {}
    text = {
        "path": ENV.PATH,
        "namespace": ENV.NAMESPACE,
        "embedder": ENV.EMBEDDER,
        "base_model": ENV.BASE_MODEL,
        "training_mode": ENV.TRAINING_MODE,
        "routing_rule": ENV.ROUTING_RULE,
        "fine_tuning": ENV.FINE_TUNING,
        "lora_dir": ENV.LORA_DIR,
        "judge": ENV.JUDGE,
        "edge_engine": ENV.EDGE_ENGINE,
        "distilled_base_url": ENV.DISTILLED_BASE_URL,
        "distilled_api_key": ENV.DISTILLED_API_KEY,
        "qdrant_url": ENV.QDRANT_URL,
        "qdrant_api_key": ENV.QDRANT_API_KEY,
    }
    for name, variable in text.items():
        if environ.get(variable) is not None and (environ[variable] or name == "base_model"):
            values[name] = environ[variable].strip()  # a blank base model is refused, not ignored
    if environ.get(ENV.THRESHOLD):
        values["threshold"] = _number(environ[ENV.THRESHOLD], ENV.THRESHOLD, float, "a number in [0, 1]")
    if environ.get(ENV.MIN_EXAMPLES):
        values["min_examples"] = _number(environ[ENV.MIN_EXAMPLES], ENV.MIN_EXAMPLES, int, "an integer >= 10")
    for name, variable in (
        ("train_every", ENV.TRAIN_EVERY),
        ("job_timeout", ENV.JOB_TIMEOUT),
        ("lookup_timeout", ENV.LOOKUP_TIMEOUT),
    ):
        if environ.get(variable):
            values[name] = parse_duration(environ[variable], variable=variable)
    if environ.get(ENV.NEIGHBOURS):
        values["neighbours"] = _number(environ[ENV.NEIGHBOURS], ENV.NEIGHBOURS, int, "an integer in [1, 100]")
    if environ.get(ENV.AGREEMENT_MARGIN):
        values["agreement_margin"] = _number(
            environ[ENV.AGREEMENT_MARGIN], ENV.AGREEMENT_MARGIN, float, "a number in [0, 1]"
        )
    for name, variable in (
        ("holdout", ENV.HOLDOUT),
        ("promotion_floor", ENV.PROMOTION_FLOOR),
        ("max_error", ENV.MAX_ERROR),
        ("explore_rate", ENV.EXPLORE_RATE),
        ("replay", ENV.REPLAY),
    ):
        if name == "max_error" and (environ.get(variable) or "").strip().lower() == "off":
            values[name] = None
        elif environ.get(variable):
            values[name] = _number(environ[variable], variable, float, "a number between 0 and 1")
    if environ.get(ENV.HOLDOUT_MIN):
        values["holdout_min"] = _number(environ[ENV.HOLDOUT_MIN], ENV.HOLDOUT_MIN, int, "an integer >= 1")
    if environ.get(ENV.VETO_MARGIN):
        raw = environ[ENV.VETO_MARGIN]
        off = raw.strip().lower() == "off"
        values["veto_margin"] = None if off else _number(raw, ENV.VETO_MARGIN, float, "a number in [0, 1], or off")
    if environ.get(ENV.CROSS_CHECK):
        check = environ[ENV.CROSS_CHECK].strip().lower()
        values["cross_check"] = None if check == "off" else check
    if environ.get(ENV.EXACT_FIELDS):
        values["exact_fields"] = tuple(f.strip() for f in environ[ENV.EXACT_FIELDS].split(",") if f.strip())
    for name, variable in (("route", ENV.ROUTE), ("capture", ENV.CAPTURE), ("probation", ENV.PROBATION)):
        if environ.get(variable):
            values[name] = _boolean(environ[variable], variable)
    return values


def _warn_unknown(environ: Mapping[str, str]) -> None:
    """Warn about a ``DISTILLKIT_*`` variable nobody reads (a typo is otherwise silently ignored)."""
    known = {v for k, v in vars(ENV).items() if not k.startswith("_") and isinstance(v, str)}
    for variable in sorted(environ):
        if variable.startswith("DISTILLKIT_") and variable not in known:
            close = difflib.get_close_matches(variable, sorted(known), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else f"; known: {', '.join(sorted(known))}"
            logger.warning("distillkit: %s is not a distillkit setting and is ignored%s", variable, hint)


def _number(raw: str, variable: str, kind: type, accepted: str) -> Any:
    try:
        return kind(raw.strip())
    except ValueError:
        raise ConfigError(f"{variable}={raw!r} is not a number.", variable=variable, fix=f"Use {accepted}.") from None


def _boolean(raw: str, variable: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{variable}={raw!r} is not a boolean.", variable=variable, fix="Use true or false.")
