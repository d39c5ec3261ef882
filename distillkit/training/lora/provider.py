"""Open-weights distillation: LoRA adapters on a small open model, served by vLLM.

OpenAI stops new fine-tuning jobs on 2027-01-06; this provider keeps the loop going on
hardware you control. It reads the same training file as OpenAI's provider (the chat JSONL of
:class:`~distillkit.training.OpenAIDatasetProvider`), so nothing upstream changes:

* :meth:`LoRAFineTuningProvider.start` writes the file into a job folder and starts a
  **separate process** (``python -m distillkit.training.lora.worker``) that applies the base
  model's own chat template, trains a LoRA adapter with transformers + peft, and writes its
  status, progress (step, loss) and log into that folder. Training never runs in the
  application's process, and a crash there is a failed job, not a crashed application.
* :meth:`~LoRAFineTuningProvider.poll` reads the folder. Once the adapter is saved, it is
  registered with a running server through vLLM's runtime LoRA API
  (``POST /v1/load_lora_adapter``), under the name the router then sends requests to: vLLM on
  a GPU, or :class:`distillkit.student.StudentServer` (llama.cpp) on a CPU.
* :meth:`~LoRAFineTuningProvider.cancel` stops the process.

Everything about a job lives in its folder, so a restarted application (or a ``distillkit
train`` worker) polls a job that an earlier process started. Whether the training process is
still alive is told by an advisory lock (``flock``) that it holds on ``lock`` for as long as it
runs: the lock is taken before the process starts and goes away with it, however it ends.

Install with ``pip install 'distillkit[lora]'`` (torch, transformers, peft), or
``'distillkit[local]'`` for the packaged CPU student ``smollm2-135m`` and its llama.cpp server.
Only the training process imports them; this module does not.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from distillkit.config import DEFAULT_BASE_MODEL, ENV
from distillkit.errors import ConfigError, TrainingError
from distillkit.training.lora.base_models import SMOLLM2, local_model
from distillkit.training.lora.files import (
    ADAPTER,
    CANCEL,
    DATA,
    LOCK,
    LOG,
    METRICS,
    SPEC,
    STATUS,
    read_json,
    write_json,
)
from distillkit.training.lora.server import VLLMServer
from distillkit.training.providers import FineTuningProvider, JobState, JobStatus

__all__ = ["LoRAFineTuningProvider", "LoRASettings"]

logger = logging.getLogger("distillkit")

#: How a packaged model renders examples (:class:`LocalModel` fields), carried in the job spec to the
#: worker and on to the rounds that continue its adapter.
_RENDERING = ("system_prompt", "chat_template")
#: Credentials the training process never needs, kept out of its environment (and so out of
#: anything it, or a library it loads, might dump). A hub token (HF_TOKEN) stays: gated models need it.
_SECRETS = frozenset({"OPENAI_API_KEY", ENV.DISTILLED_API_KEY, ENV.QDRANT_API_KEY})

#: A job folder's states: ``queued`` (process starting), ``running``, ``trained`` (adapter saved,
#: not yet registered with the server), then ``succeeded``, ``failed`` or ``cancelled``.
_TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
#: A folder's state as a job state (registering with the server is part of the job).
_STATES: dict[str, JobState] = {
    "queued": "queued",
    "running": "running",
    "trained": "running",
    "succeeded": "succeeded",
    "failed": "failed",
    "cancelled": "cancelled",
}


@dataclass(frozen=True)
class LoRASettings:
    """How the adapter is trained. The defaults suit a 0.5B-1.5B instruct model on one GPU.

    Attributes:
        rank: LoRA rank ``r``; vLLM needs ``--max-lora-rank`` at least this (its default is 16).
        alpha: LoRA scaling ``lora_alpha``.
        dropout: LoRA dropout.
        target_modules: the layers adapted: ``"all-linear"`` (peft's shortcut) or module names.
        epochs: passes over the examples.
        learning_rate: peak learning rate (AdamW, linear decay to 0 after a short warm-up).
        batch_size: examples per optimiser step.
        max_length: tokens per example at most; a longer prompt loses its oldest tokens, the answer
            is kept. A bound for outliers, not a length every example pays: batches are grouped by
            length and padded to their own longest example.
        max_batch_tokens: padded tokens held in memory at once; a larger batch is trained in pieces
            whose gradients add up (same result, bounded activation memory). None: the whole batch.
        stop_exact: stop once, over the last quarter-epoch of first-epoch steps, at least this share
            of the examples (each measured before the model trained on it) was reproduced exactly:
            training stops when it has learnt, ``epochs`` is then the most it runs. 0: every epoch.
        threads: CPU threads of the training process (default: the cores it may run on). Lower it
            when the application, the student server or a second job share the cores.
        seed: for the shuffling and the adapter's initial weights.
        device: ``"cuda"``, ``"cpu"``, ... (default: CUDA when available).
        local_files_only: never contact a model hub (the base model must be a local folder or in
            the cache); the default is to do what transformers does.
    """

    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: str | tuple[str, ...] = "all-linear"
    epochs: int = 2
    learning_rate: float = 2e-4
    batch_size: int = 8
    max_length: int = 2048
    max_batch_tokens: int | None = None
    stop_exact: float = 0.0
    threads: int | None = None
    seed: int = 0
    device: str | None = None
    local_files_only: bool = False

    def __post_init__(self) -> None:
        for name in ("rank", "alpha", "epochs", "batch_size", "max_length", "max_batch_tokens", "threads"):
            value = getattr(self, name)
            if value is None and name in ("max_batch_tokens", "threads"):
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"LoRASettings.{name}={value!r} must be an integer >= 1.", variable=name)
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"LoRASettings.dropout={self.dropout!r} is outside [0, 1).", variable="dropout")
        if not 0.0 <= self.stop_exact <= 1.0:
            raise ConfigError(f"LoRASettings.stop_exact={self.stop_exact!r} is outside [0, 1].", variable="stop_exact")
        if not self.learning_rate > 0:
            raise ConfigError(
                f"LoRASettings.learning_rate={self.learning_rate!r} is not positive.", variable="learning_rate"
            )

    @classmethod
    def configured(cls, base_model: str | None, environ: Mapping[str, str] | None = None) -> LoRASettings:
        """The defaults for ``base_model`` (:meth:`small_cpu` for a packaged one), then every
        ``DISTILLKIT_LORA_<FIELD>`` variable set in ``environ`` (default: the process environment).

        Raises:
            ConfigError: a variable's value is not of its field's kind, naming the variable.
        """
        environ = os.environ if environ is None else environ
        packaged = base_model is not None and local_model(base_model) is not None
        defaults = cls.small_cpu() if packaged else cls()
        values: dict[str, Any] = {}
        for field in fields(cls):
            variable = f"DISTILLKIT_LORA_{field.name.upper()}"
            raw = (environ.get(variable) or "").strip()
            if not raw or field.name == "local_files_only":
                continue
            kind = type(getattr(defaults, field.name))
            if field.name in ("target_modules", "device"):
                values[field.name] = raw if "," not in raw else tuple(m.strip() for m in raw.split(","))
            elif raw.lower() in ("none", "auto") and field.name in ("max_batch_tokens", "threads"):
                values[field.name] = None
            else:
                try:
                    values[field.name] = (float if kind is float else int)(raw)
                except ValueError:
                    raise ConfigError(
                        f"{variable}={raw!r} is not a number.",
                        variable=variable,
                        fix=f"Use {'a number' if kind is float else 'an integer'}, or unset it for "
                        f"the default ({getattr(defaults, field.name)}).",
                    ) from None
        try:
            return replace(defaults, **values)
        except ConfigError as exc:
            variable = f"DISTILLKIT_LORA_{(exc.variable or '').upper()}"
            raise ConfigError(f"{variable}: {exc}", variable=variable) from None

    @classmethod
    def small_cpu(cls, **overrides: Any) -> LoRASettings:
        """Settings for a ~100M-parameter model such as ``smollm2-135m`` trained on a CPU.

        A higher learning rate, no dropout (each LoRA layer would copy its input), and training
        that stops once the answers of examples it has not trained on are predicted (``stop_exact``
        0.95, at most 2 epochs). Examples up to 1,024 tokens are kept whole; a batch is trained
        in pieces of at most 1,024 padded tokens, which bounds the activations (about 4 MB per
        token for SmolLM2-135M in float32). The default when the base model is a packaged one
        (:data:`SMOLLM2`). Measured figures: ``docs/training.md``.
        """
        values: dict[str, Any] = {
            "rank": 16,
            "alpha": 32,
            "dropout": 0.0,
            "epochs": 2,
            "learning_rate": 1e-3,
            "batch_size": 8,
            "max_length": 1024,
            "max_batch_tokens": 1024,
            "stop_exact": 0.95,
            "device": "cpu",
        }
        return cls(**{**values, **overrides})


class LoRAFineTuningProvider(FineTuningProvider):
    """Trains LoRA adapters in separate processes; registers them with vLLM.

    Args:
        work_dir: where job folders are kept (created owner-only). Adapters stay here: vLLM loads
            them from these paths, so keep it on a disk the server can read.
        base_model: the open model to adapt: ``"smollm2-135m"`` (SmolLM2-135M-Instruct, packaged
            in ``distillkit[local]``, the default for machines without a GPU; served by
            :class:`distillkit.student.StudentServer`), a local folder, a ``.gguf`` file, or a hub
            id such as ``Qwen/Qwen2.5-0.5B-Instruct``. Default: the ``base_model`` the trainer passes
            (``DISTILLKIT_BASE_MODEL``), which must then name an open model.
        server: where adapters are registered once trained (a :class:`VLLMServer` or its base
            URL). ``None``: the adapter's name is activated without registering it, for a
            server you load adapters into yourself.
        settings: hyperparameters (default: :meth:`LoRASettings.small_cpu` for a packaged base
            model such as ``smollm2-135m``, else :class:`LoRASettings`'s defaults).
        python: the interpreter that runs training (default: this one); it needs
            ``distillkit[lora]`` installed.

    Incremental training: when the trainer passes one of this provider's own adapters as the
    base model (the namespace's active model), the new job starts from that adapter's weights
    and trains it further on the new examples.

    Example:
        >>> provider = LoRAFineTuningProvider(  # doctest: +SKIP
        ...     "/srv/distillkit/lora",
        ...     base_model="Qwen/Qwen2.5-0.5B-Instruct",
        ...     server="http://localhost:8000/v1",
        ... )
        >>> distiller = Distiller(fine_tuning_provider=provider)  # doctest: +SKIP
    """

    name = "lora"

    def __init__(
        self,
        work_dir: str | os.PathLike[str],
        *,
        base_model: str | None = None,
        server: VLLMServer | str | None = None,
        settings: LoRASettings | None = None,
        python: str | None = None,
    ) -> None:
        self.work_dir = Path(work_dir).expanduser().resolve()
        self.base_model = base_model
        self.server = VLLMServer(server) if isinstance(server, str) else server
        self.settings = settings or LoRASettings.configured(base_model)
        self.python = python or sys.executable
        self._processes: dict[str, subprocess.Popen[bytes]] = {}

    def __repr__(self) -> str:
        return f"LoRAFineTuningProvider(work_dir={str(self.work_dir)!r}, base_model={self.base_model!r})"

    # --- FineTuningProvider ---------------------------------------------------------------------

    def start(self, training_file: bytes, *, base_model: str, namespace: str, suffix: str | None = None) -> str:
        base, init_adapter, rendering = self._resolve_base(base_model)
        job_id = f"distillkit-{suffix or 'lora'}-{uuid.uuid4().hex[:12]}"
        folder = self.job_dir(job_id)
        self.work_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder.mkdir(mode=0o700)
        (folder / DATA).write_bytes(training_file)
        spec = {
            "job_id": job_id,
            "namespace": namespace,
            "base_model": base,
            "init_adapter": init_adapter,
            **rendering,
            "settings": asdict(self.settings),
            "created_at": time.time(),
        }
        write_json(folder / SPEC, spec)
        write_json(folder / STATUS, {"state": "queued", "updated_at": time.time()})
        import fcntl  # POSIX only, like the process handling here; imported where used

        # Take the lock before the process exists and hand it over: from here until the
        # process ends, however it ends, the lock is held, and poll() can tell.
        lock = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            with open(folder / LOG, "ab") as log:
                process = subprocess.Popen(
                    [self.python, "-m", "distillkit.training.lora.worker", str(folder), str(lock)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    pass_fds=(lock,),
                    env={k: v for k, v in os.environ.items() if k not in _SECRETS},
                    start_new_session=True,  # a Ctrl-C meant for the application does not reach it
                )
        finally:
            os.close(lock)
        spec["pid"] = process.pid
        write_json(folder / SPEC, spec)
        self._processes[job_id] = process
        logger.info("distillkit: LoRA job %s started (pid %d) from %s", job_id, process.pid, base)
        return job_id

    def poll(self, job_id: str) -> JobStatus:
        folder = self.job_dir(job_id)
        status = read_json(folder / STATUS)
        if status is None:
            return JobStatus("failed", error=f"no LoRA job folder at {folder}")
        state = status.get("state")
        if state in _TERMINAL:
            return self._status(status)
        cancelled = (folder / CANCEL).exists()
        if state == "trained":
            return self._status(self._cancelled(folder) if cancelled else self._register(folder, status))
        if not self._alive(job_id):
            # Read again: the process may have written its last status just before exiting.
            status = read_json(folder / STATUS) or status
            if status.get("state") in _TERMINAL or status.get("state") == "trained":
                return self.poll(job_id)
            if cancelled:
                return self._status(self._cancelled(folder))
            code = self._exit_code(job_id)  # known only to the process that started it
            if code is None:
                how = "it is gone"
            elif code < 0:
                how = f"killed by signal {-code}"
            else:
                how = f"exit code {code}"
            error = f"the training process ended without finishing ({how}); see {folder / LOG}"
            return self._status(self._end(folder, "failed", error=error))
        return self._status(status)

    def cancel(self, job_id: str) -> None:
        folder = self.job_dir(job_id)
        if not folder.is_dir():
            raise ValueError(f"no LoRA job {job_id!r} in {self.work_dir}")
        (folder / CANCEL).touch()
        pid = (read_json(folder / SPEC) or {}).get("pid")
        if isinstance(pid, int) and self._alive(job_id):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)  # the worker stops at its next step

    # --- job folders --------------------------------------------------------------------------

    def job_dir(self, job_id: str) -> Path:
        """The folder of job ``job_id`` (its adapter is in ``adapter/``, its log in ``train.log``)."""
        if not _is_job_id(job_id):
            raise ValueError(f"{job_id!r} is not a LoRA job id")
        return self.work_dir / job_id

    def register_again(self, model: str) -> bool:
        """Register the adapter of job ``model`` with the server again (a restarted server has lost
        it); False when there is no server, no such job or no adapter. Raises :class:`TrainingError`
        when the server refuses."""
        if self.server is None or not _is_job_id(model) or not (self.job_dir(model) / ADAPTER).is_dir():
            return False
        self.server.load_adapter(model, self.job_dir(model) / ADAPTER)
        logger.warning("distillkit: the student server had lost adapter %s; registered it again", model)
        return True

    def in_flight(self) -> dict[str, str]:
        """The jobs of this folder that have not ended, oldest first, with their progress lines."""
        found = []
        for folder, status in _job_folders(self.work_dir):
            if status.get("state") in _TERMINAL:
                continue
            if status.get("state") == "trained" or self._alive(folder.name):
                found.append((float(status.get("updated_at") or 0), folder.name, _progress(status) or "queued"))
        return {job_id: line for _, job_id, line in sorted(found)}

    def metrics(self, job_id: str) -> dict[str, Any] | None:
        """What the training process measured (losses, seconds, examples, tokens, peak memory)."""
        return read_json(self.job_dir(job_id) / METRICS)

    # --- helpers --------------------------------------------------------------------------------

    def _resolve_base(self, requested: str) -> tuple[str, str | None, dict[str, str | None]]:
        """The base weights to load, the adapter to continue from (incremental training), and how
        examples are rendered (packaged models): the system prompt put first when an example has
        none, and the chat template where the base model's file has none."""
        if _is_job_id(requested):
            previous = self.work_dir / requested
            spec = read_json(previous / SPEC)
            if spec is not None and (previous / ADAPTER / "adapter_config.json").is_file():
                rendering = {key: spec.get(key) for key in _RENDERING}
                return str(spec["base_model"]), str(previous / ADAPTER), rendering
        base = self.base_model or requested
        packaged = local_model(base)
        if packaged is not None:
            rendering = {key: getattr(packaged, key) for key in _RENDERING}
            return str(packaged.gguf), None, rendering
        if base == DEFAULT_BASE_MODEL or base.startswith(("gpt-", "ft:", "o1", "o3", "o4")):
            raise ConfigError(
                f"LoRA training needs an open-weights base model, not {base!r}.",
                variable=ENV.BASE_MODEL,
                fix=f"Pass LoRAFineTuningProvider(base_model=...) or set DISTILLKIT_BASE_MODEL to {SMOLLM2!r} "
                "(runs on a CPU, pip install 'distillkit[local]'), a local folder, a .gguf file or a hub id "
                "such as Qwen/Qwen2.5-0.5B-Instruct.",
            )
        return base, None, dict.fromkeys(_RENDERING)

    def _alive(self, job_id: str) -> bool:
        """Whether the job's training process still runs (it holds the folder's lock until it ends)."""
        import fcntl

        process = self._processes.get(job_id)
        if process is not None and process.poll() is None:
            return True
        try:
            fd = os.open(self.job_dir(job_id) / LOCK, os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing also releases a lock taken just now
        return False

    def _exit_code(self, job_id: str) -> int | None:
        process = self._processes.pop(job_id, None)
        return process.poll() if process is not None else None

    def _register(self, folder: Path, status: dict[str, Any]) -> dict[str, Any]:
        """Make the trained adapter servable, then mark the job succeeded."""
        name = folder.name
        if self.server is not None:
            try:
                self.server.load_adapter(name, folder / ADAPTER)
            except TrainingError as exc:
                # The training is not lost: the next poll tries again (job_timeout bounds it).
                logger.warning("distillkit: LoRA job %s trained, not registered yet: %s", name, exc)
                return {**status, "progress": f"trained; waiting for the server: {exc}"}
        return self._end(folder, "succeeded", model=name)

    def _cancelled(self, folder: Path) -> dict[str, Any]:
        return self._end(folder, "cancelled", error="cancelled")

    @staticmethod
    def _end(folder: Path, state: str, **fields: Any) -> dict[str, Any]:
        status = {**(read_json(folder / STATUS) or {}), "state": state, "updated_at": time.time(), **fields}
        write_json(folder / STATUS, status)
        return status

    @staticmethod
    def _status(status: dict[str, Any]) -> JobStatus:
        state: JobState = _STATES.get(str(status.get("state")), "failed")
        return JobStatus(
            state,
            model=status.get("model") if state == "succeeded" else None,
            error=status.get("error"),
            trained_tokens=status.get("trained_tokens"),
            progress=_progress(status),
        )


def trained_adapters(work_dir: str | os.PathLike[str], base_gguf: str | os.PathLike[str], limit: int = 4) -> list[Path]:
    """The adapter folders of the newest ``limit`` succeeded jobs in ``work_dir`` trained on
    ``base_gguf``: what a (re)started student server loads, so the active model answers at once."""
    found = []
    for folder, status in _job_folders(Path(work_dir)):
        if status.get("state") != "succeeded" or not (folder / ADAPTER).is_dir():
            continue
        spec = read_json(folder / SPEC)
        if spec is not None and Path(str(spec.get("base_model"))).name == Path(base_gguf).name:
            found.append((float(status.get("updated_at") or 0), folder / ADAPTER))
    return [path for _, path in sorted(found, reverse=True)[:limit]]


def _job_folders(work_dir: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """The job folders of ``work_dir`` that have a status, with it (none when the folder is missing)."""
    for folder in work_dir.glob("distillkit-*") if work_dir.is_dir() else ():
        status = read_json(folder / STATUS) if _is_job_id(folder.name) else None
        if status:
            yield folder, status


def _progress(status: dict[str, Any]) -> str | None:
    """A job folder's status as one line: the phase; while training, step/total, loss, examples per second, ETA."""
    if status.get("progress") is not None:
        return str(status["progress"])
    if status.get("state") == "trained":
        return "registering the adapter with the student server"
    phase = status.get("phase")
    if phase != "training" or not isinstance(status.get("loss"), (int, float)):
        return phase
    line = f"training step {status.get('step')}/{status.get('total_steps')}, loss {status['loss']:.3f}"
    if isinstance(status.get("examples_per_s"), (int, float)):
        line += f", {status['examples_per_s']:.1f} examples/s"
    if isinstance(status.get("eta_s"), (int, float)):
        line += f", ETA {status['eta_s']:.0f} s"
    return line


def _is_job_id(name: str) -> bool:
    """A job id is also a folder name and a served model name: a plain, non-hidden file name."""
    return re.fullmatch(r"[A-Za-z0-9._-]+", name) is not None and not name.startswith(".")
