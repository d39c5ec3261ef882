"""Configuration: one frozen dataclass, read from the environment and a ``.env`` file.

Every environment variable distillkit reads is a constant of ``ENV``
(:mod:`distillkit.environment`, which also turns their text into values); ``docs/configuration.md``
documents the same names, and a test keeps the two in step.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from distillkit.environment import ENV, parse_duration, read_environment
from distillkit.errors import ConfigError

__all__ = [
    "CROSS_CHECKS",
    "DEFAULT_BASE_MODEL",
    "EMBEDDERS",
    "ENV",
    "FINE_TUNING_PROVIDERS",
    "JUDGES",
    "ROUTING_RULES",
    "DistillConfig",
    "parse_duration",
]

#: Small model that OpenAI still fine-tunes and whose fine-tunes are not on the 2027-01-14
#: retirement list (gpt-4o / 4o-mini / 4.1 / 4.1-mini are).
DEFAULT_BASE_MODEL = "gpt-4.1-nano-2025-04-14"

#: Built-in embedder names accepted by ``DISTILLKIT_EMBEDDER``. ``openai:<model>`` is also accepted.
EMBEDDERS = ("wordllama", "minilm", "openai")

TrainingMode = Literal["incremental", "full"]

#: Routing rules accepted by ``DISTILLKIT_ROUTING_RULE`` (see :mod:`distillkit.routing.router`).
ROUTING_RULES = ("top1", "agreement")
RoutingRule = Literal["top1", "agreement"]

#: Cross-checks accepted by ``DISTILLKIT_CROSS_CHECK`` (``off`` is None; see :mod:`distillkit.routing.router`).
CROSS_CHECKS = ("nearest", "neighbours", None)
CrossCheck = Literal["nearest", "neighbours"]
#: Where the embedded store's engine runs (``DISTILLKIT_EDGE_ENGINE``; see :mod:`distillkit.store._engine`).
EDGE_ENGINES = ("process", "inline")
EdgeEngine = Literal["process", "inline"]

#: Promotion-gate judges accepted by ``DISTILLKIT_JUDGE`` (see :mod:`distillkit.training.evaluation`).
JUDGES = ("off", "teacher")
Judge = Literal["off", "teacher"]

#: Fine-tuning providers accepted by ``DISTILLKIT_FINE_TUNING`` (see :mod:`distillkit.training`).
FINE_TUNING_PROVIDERS = ("openai", "lora")
FineTuning = Literal["openai", "lora"]


@dataclass(frozen=True)
class DistillConfig:
    """Everything a :class:`~distillkit.Distiller` needs to know, validated on construction.

    Build it from the environment with :meth:`from_env`, or directly::

        config = DistillConfig(path="/var/lib/myapp/distillkit", threshold=0.92)

    Secrets (``distilled_api_key``, ``qdrant_api_key``) are kept out of ``repr``.
    """

    path: str = "./.distillkit"
    threshold: float = 0.9
    namespace: str = "default"
    embedder: str = "minilm"
    min_examples: int = 50
    base_model: str = DEFAULT_BASE_MODEL
    train_every: float = 3600.0
    training_mode: TrainingMode = "incremental"
    #: Incremental rounds also train on earlier rounds' examples, this many per new example
    #: (sampled from the namespace's trained points), so the adapter does not forget them.
    replay: float = 0.5
    job_timeout: float = 6 * 3600.0
    distilled_base_url: str | None = None
    distilled_api_key: str | None = field(default=None, repr=False)
    route: bool = True
    capture: bool = True
    qdrant_url: str | None = None
    qdrant_api_key: str | None = field(default=None, repr=False)
    #: The embedded store's engine: ``process`` runs it in a child process, so that building its
    #: index never holds this process's GIL; ``inline`` runs it here (every build stalls the
    #: process), for platforms where a child process cannot be started.
    edge_engine: EdgeEngine = "process"
    #: Seconds a routing lookup waits at most while the embedded store builds its index; the
    #: teacher answers a request that waited longer.
    lookup_timeout: float = 0.05
    #: A new point whose nearest neighbour (same namespace and task) is at least this similar
    #: only increments that neighbour's ``count``.
    dedup_threshold: float = 0.99
    capture_queue_size: int = 10_000
    capture_batch_size: int = 64
    #: ``top1``: route when the nearest trained neighbour is >= threshold similar. ``agreement``:
    #: also route up to ``agreement_margin`` below it when the ``neighbours`` nearest trained
    #: neighbours all got the same teacher answer (README, "Routing quality"). With ``agreement``,
    #: an untrained point within ``veto_margin`` of the trained neighbour's similarity whose
    #: teacher answer differs sends the request to the teacher (None: no such check).
    routing_rule: RoutingRule = "agreement"
    neighbours: int = 5
    agreement_margin: float = 0.02
    veto_margin: float | None = 0.05
    #: Where answers repeat (two or more of the nearest trained neighbours share one), a routed
    #: request is answered by the student first, and its answer must be the nearest trained
    #: neighbour's teacher answer (``nearest``) or one of the ``neighbours`` nearest's
    #: (``neighbours``); otherwise the teacher answers it (a cascade). None (``off``): no check.
    cross_check: CrossCheck | None = "nearest"
    #: ``openai``: OpenAI's fine-tuning API. ``lora``: LoRA adapters trained on this machine from
    #: ``base_model`` (an open model), kept in ``lora_dir`` and registered with the vLLM server at
    #: ``distilled_base_url`` (:mod:`distillkit.training.lora`).
    fine_tuning: FineTuning = "openai"
    lora_dir: str = "./.distillkit-lora"
    #: The promotion gate (:mod:`distillkit.training.evaluation`): each round holds out this share
    #: of its pending points (at least ``holdout_min``, and only when ``min_examples`` are left to
    #: train on; a smaller round waits for more data). After the job, the candidate answers them and
    #: is activated only if at least ``promotion_floor`` of its answers agree with the teacher's.
    #: 0.8 rejects a student that did not learn (the base model without its adapter answered 0 of
    #: 40 held-out BANKING77 paraphrases) while a working one (0.925-0.98 measured) passes with a
    #: miss in a small sample; how many routed answers may be wrong is ``max_error``'s job.
    holdout: float = 0.1
    holdout_min: int = 2
    promotion_floor: float = 0.8
    #: ``off``: free-text held-out answers agree by similarity. ``teacher``: the teacher model is
    #: asked whether the candidate's answer says the same as its own (one call per such point).
    judge: Judge = "off"
    #: JSON field paths compared as they are (no number, date or whitespace normalisation) by the
    #: promotion gate, shadow checks and exploration: ``order_id`` (every namespace) or
    #: ``extract:order_id`` (one namespace); see :mod:`distillkit.routing.agreement`.
    exact_fields: tuple[str, ...] = ()
    #: A candidate below ``promotion_floor`` that answered some held-out points right is activated
    #: *on probation* where no model serves the namespace: it routes nothing until its measured
    #: labels (the gate's, then every refused request also asked of it) certify a region within
    #: ``max_error``. False: such a candidate is rejected, as before.
    probation: bool = True
    #: The error budget (:mod:`distillkit.budget`): the share of routed answers that may disagree
    #: with the teacher, at 0.95 confidence, once enough labels were measured; until then the
    #: configured rule and threshold decide. Per namespace: ``Distiller.budget.set_max_error``.
    #: None (``off``): no budget; no labels are kept and the configured rule always decides.
    max_error: float | None = 0.05
    #: Share of would-be-routed requests also answered by the other side in the background (the
    #: teacher when the student answered, the student when the budget kept the teacher), to label.
    explore_rate: float = 0.02

    def __post_init__(self) -> None:
        for name, variable in (("threshold", ENV.THRESHOLD), ("dedup_threshold", None)):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ConfigError(
                    f"{variable or name}={value!r} is outside [0, 1].",
                    variable=variable or name,
                    fix="Use a cosine similarity between 0 and 1, for example 0.9.",
                )
        if not (self.embedder in EMBEDDERS or self.embedder.startswith("openai:")):
            raise ConfigError(
                f"{ENV.EMBEDDER}={self.embedder!r} is not a known embedder.",
                variable=ENV.EMBEDDER,
                fix=f"Use one of {', '.join(EMBEDDERS)} or openai:<embedding model>.",
            )
        if not isinstance(self.min_examples, int) or self.min_examples < 10:
            raise ConfigError(
                f"{ENV.MIN_EXAMPLES}={self.min_examples!r} is below 10.",
                variable=ENV.MIN_EXAMPLES,
                fix="Use an integer >= 10 (OpenAI's minimum for a fine-tuning file).",
            )
        for name, variable in (("train_every", ENV.TRAIN_EVERY), ("job_timeout", ENV.JOB_TIMEOUT)):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(
                    f"{variable}={value!r} is not positive.",
                    variable=variable,
                    fix="Use a duration > 0: 30s, 15m, 1h, 1d.",
                )
        if self.training_mode not in ("incremental", "full"):
            raise ConfigError(
                f"{ENV.TRAINING_MODE}={self.training_mode!r} is not a training mode.",
                variable=ENV.TRAINING_MODE,
                fix="Use incremental or full.",
            )
        if not self.namespace or not isinstance(self.namespace, str):
            raise ConfigError(
                f"{ENV.NAMESPACE}={self.namespace!r} is empty.",
                variable=ENV.NAMESPACE,
                fix="Use a non-empty name such as 'support'.",
            )
        if self.routing_rule not in ROUTING_RULES:
            raise ConfigError(
                f"{ENV.ROUTING_RULE}={self.routing_rule!r} is not a routing rule.",
                variable=ENV.ROUTING_RULE,
                fix=f"Use one of {', '.join(ROUTING_RULES)}.",
            )
        if self.edge_engine not in EDGE_ENGINES:
            raise ConfigError(
                f"{ENV.EDGE_ENGINE}={self.edge_engine!r} is not an engine placement.",
                variable=ENV.EDGE_ENGINE,
                fix="Use process or inline.",
            )
        if not isinstance(self.lookup_timeout, (int, float)) or not 0 < self.lookup_timeout <= 60:
            raise ConfigError(
                f"{ENV.LOOKUP_TIMEOUT}={self.lookup_timeout!r} is outside (0, 60] seconds.",
                variable=ENV.LOOKUP_TIMEOUT,
                fix="Use a short duration, for example 50ms.",
            )
        if self.cross_check not in CROSS_CHECKS:
            raise ConfigError(
                f"{ENV.CROSS_CHECK}={self.cross_check!r} is not a cross-check.",
                variable=ENV.CROSS_CHECK,
                fix="Use nearest, neighbours or off.",
            )
        if not isinstance(self.neighbours, int) or isinstance(self.neighbours, bool) or not 1 <= self.neighbours <= 100:
            raise ConfigError(
                f"{ENV.NEIGHBOURS}={self.neighbours!r} is outside [1, 100].",
                variable=ENV.NEIGHBOURS,
                fix="Use an integer between 1 and 100, for example 5.",
            )
        for variable, margin, example in (
            (ENV.AGREEMENT_MARGIN, self.agreement_margin, "0.02"),
            (ENV.VETO_MARGIN, 0.0 if self.veto_margin is None else self.veto_margin, "0.05, or off"),
        ):
            if not isinstance(margin, (int, float)) or isinstance(margin, bool) or not 0.0 <= margin <= 1.0:
                raise ConfigError(
                    f"{variable}={margin!r} is outside [0, 1].",
                    variable=variable,
                    fix=f"Use a similarity margin between 0 and 1, for example {example}.",
                )
        if self.fine_tuning not in FINE_TUNING_PROVIDERS:
            raise ConfigError(
                f"{ENV.FINE_TUNING}={self.fine_tuning!r} is not a fine-tuning provider.",
                variable=ENV.FINE_TUNING,
                fix=f"Use one of {', '.join(FINE_TUNING_PROVIDERS)}.",
            )
        if self.fine_tuning == "lora" and self.base_model == DEFAULT_BASE_MODEL:
            raise ConfigError(
                f"{ENV.FINE_TUNING}=lora trains an open model, and {ENV.BASE_MODEL} is {DEFAULT_BASE_MODEL}.",
                variable=ENV.BASE_MODEL,
                fix="Set it to a local folder or a hub id, for example Qwen/Qwen2.5-0.5B-Instruct.",
            )
        for variable, value, low_open, high_open, example in (
            (ENV.HOLDOUT, self.holdout, False, True, "0.1, or 0 to turn the promotion gate off"),
            (ENV.PROMOTION_FLOOR, self.promotion_floor, False, False, "0.8"),
            (ENV.MAX_ERROR, 0.05 if self.max_error is None else self.max_error, True, True, "0.05, or off"),
            (ENV.EXPLORE_RATE, self.explore_rate, False, False, "0.02"),
            (ENV.REPLAY, self.replay, False, False, "0.5, or 0 to train on the new examples only"),
        ):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            ok = ok and (value > 0.0 if low_open else value >= 0.0) and (value < 1.0 if high_open else value <= 1.0)
            if not ok:
                interval = f"{'(' if low_open else '['}0, 1{')' if high_open else ']'}"
                raise ConfigError(
                    f"{variable}={value!r} is outside {interval}.",
                    variable=variable,
                    fix=f"Use a share between 0 and 1, for example {example}.",
                )
        if not isinstance(self.base_model, str) or not self.base_model.strip():
            raise ConfigError(
                f"{ENV.BASE_MODEL}={self.base_model!r} is blank.",
                variable=ENV.BASE_MODEL,
                fix=f"Name the model to fine-tune, for example {DEFAULT_BASE_MODEL}, or unset it.",
            )
        if self.distilled_base_url is not None:
            url = urlsplit(self.distilled_base_url.strip())
            if url.scheme not in ("http", "https") or not url.netloc:
                raise ConfigError(
                    f"{ENV.DISTILLED_BASE_URL}={self.distilled_base_url!r} is not an http(s) URL.",
                    variable=ENV.DISTILLED_BASE_URL,
                    fix="Use the server's OpenAI-compatible base URL, for example http://localhost:8000/v1.",
                )
        if self.judge not in JUDGES:
            raise ConfigError(
                f"{ENV.JUDGE}={self.judge!r} is not a judge.",
                variable=ENV.JUDGE,
                fix=f"Use one of {', '.join(JUDGES)}.",
            )
        if not isinstance(self.holdout_min, int) or isinstance(self.holdout_min, bool) or self.holdout_min < 1:
            raise ConfigError(
                f"{ENV.HOLDOUT_MIN}={self.holdout_min!r} is not a positive integer.",
                variable=ENV.HOLDOUT_MIN,
                fix="Use an integer >= 1, for example 2.",
            )
        for name in ("capture_queue_size", "capture_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)!r} must be >= 1.", variable=name)

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        dotenv: str | os.PathLike[str] | bool = True,
        **overrides: Any,
    ) -> DistillConfig:
        """Read the configuration from environment variables (names in :class:`ENV`).

        Args:
            environ: variables to read instead of ``os.environ`` (tests use this).
            dotenv: load a ``.env`` file first (found from the working directory upwards), or the
                given path; variables already set are never overridden. ``False`` skips it.
            **overrides: field values that win over the environment.

        Raises:
            ConfigError: a value is invalid; the message names the variable and what it accepts.
        """
        if environ is None:
            if dotenv:
                from dotenv import find_dotenv, load_dotenv

                load_dotenv(find_dotenv(usecwd=True) if dotenv is True else dotenv, override=False)
            environ = os.environ
        values = read_environment(environ)
        values.update(overrides)
        return cls(**values)

    def replace(self, **changes: Any) -> DistillConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)
