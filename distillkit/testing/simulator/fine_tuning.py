"""The fine-tuning jobs API: jobs move through their stages in real time or when told to, and
succeed, fail or hang on demand.
"""

from __future__ import annotations

import copy
import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

from distillkit.testing.simulator.files import _Files, _validate_training_file
from distillkit.testing.simulator.http import _ORG, _ApiError, _limit, _page, _Response

_TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
_NEXT_STAGE = {"validating_files": "queued", "queued": "running"}
_AUTO_HYPERPARAMETERS = {"batch_size": 1, "learning_rate_multiplier": 2.0, "n_epochs": 3}
_MIN_TRAINING_EXAMPLES = 10
#: A refusal to fine-tune at all, for ``Simulator.refuse_fine_tuning``.
FINE_TUNING_REFUSAL = (
    "Fine-tuning is not available for your organization: new fine-tuning jobs can no longer be created."
)


@dataclass
class _Job:
    """A fine-tuning job: its public JSON object plus bookkeeping that never leaves the server."""

    data: dict[str, Any]
    stage_started: float
    events: list[dict[str, Any]] = field(default_factory=list)


class _FineTuning(_Files):
    """``/v1/fine_tuning/jobs``, and the controls tests use to move jobs along."""

    _jobs: dict[str, _Job]
    _added_models: dict[str, int]  # students added through the models API may be fine-tuned too
    job_step_seconds: float | None
    fail_jobs: bool
    hang_jobs: bool
    refuse_fine_tuning: str | None

    @property
    def jobs(self) -> dict[str, dict[str, Any]]:
        """Fine-tuning job objects by id, oldest first (copies, brought up to date first)."""
        with self._lock:
            self._progress_jobs()
            return {job_id: copy.deepcopy(job.data) for job_id, job in self._jobs.items()}

    def tick(self) -> None:
        """Advance every non-terminal fine-tuning job by one stage."""
        with self._lock:
            self._progress_jobs()
            now = time.time()
            for job in self._jobs.values():
                if job.data["status"] not in _TERMINAL:
                    self._advance(job, now)

    def finish_jobs(self) -> None:
        """Run every non-terminal job to its end (hung jobs stop at ``running``)."""
        with self._lock:
            self._progress_jobs()
            now = time.time()
            for job in self._jobs.values():
                while job.data["status"] not in _TERMINAL:
                    before = job.data["status"]
                    self._advance(job, now)
                    if job.data["status"] == before:  # hung
                        break

    def fail_job(self, job_id: str, message: str = "Fine-tuning job failed (simulated).") -> None:
        """Make a non-terminal job fail now with error code ``server_error``.

        Raises:
            KeyError: If there is no such job.
            ValueError: If the job already ended.
        """
        with self._lock:
            self._progress_jobs()
            job = self._jobs[job_id]
            if job.data["status"] in _TERMINAL:
                raise ValueError(f"job {job_id} already ended with status {job.data['status']!r}")
            self._fail(job, time.time(), "server_error", message, None)

    def _jobs_route(self, method: str, parts: list[str], query: dict[str, str], body: Any) -> _Response:
        with self._lock:
            self._progress_jobs()
            if not parts:
                if method == "POST":
                    return self._json(self._create_job(body))
                if method == "GET":
                    jobs = [job.data for job in reversed(self._jobs.values())]  # newest first
                    page, has_more = _page(jobs, query.get("after"), _limit(query))
                    return self._json({"object": "list", "data": copy.deepcopy(page), "has_more": has_more})
                raise self._not_found(method, "/v1/fine_tuning/jobs")
            job = self._jobs.get(parts[0])
            if job is None:
                raise _ApiError(404, f"Could not find fine-tune job: {parts[0]}.", param="fine_tune_id")
            if len(parts) == 1 and method == "GET":
                return self._json(job.data)
            if parts[1:] == ["cancel"] and method == "POST":
                if job.data["status"] in _TERMINAL:
                    raise _ApiError(400, f"Job has already {job.data['status']}: {parts[0]}.", param=None)
                job.data["status"] = "cancelled"
                self._event(job, time.time(), "Fine-tuning job cancelled")
                return self._json(job.data)
            if parts[1:] == ["events"] and method == "GET":
                events = list(reversed(job.events))
                page, has_more = _page(events, query.get("after"), _limit(query))
                return self._json({"object": "list", "data": copy.deepcopy(page), "has_more": has_more})
        raise self._not_found(method, "/v1/fine_tuning/jobs/" + "/".join(parts))

    def _create_job(self, body: Any) -> dict[str, Any]:
        """Create a job (lock held)."""
        if self.refuse_fine_tuning:
            raise _ApiError(403, self.refuse_fine_tuning, type="permission_error", code="fine_tuning_unavailable")
        if not isinstance(body, dict):
            raise _ApiError(400, "The request body must be a JSON object.")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _ApiError(400, "Missing required parameter: 'model'.", param="model")
        known = any(job.data["fine_tuned_model"] == model for job in self._jobs.values())
        if model.startswith("ft:") and not known and model not in self._added_models:
            raise _ApiError(
                400,
                f"Model {model} is not available for fine-tuning or does not exist.",
                param="model",
                code="model_not_available",
            )
        training_file = body.get("training_file")
        if not isinstance(training_file, str) or not training_file:
            raise _ApiError(400, "Missing required parameter: 'training_file'.", param="training_file")
        if training_file not in self._files:
            raise _ApiError(400, f"invalid training_file: {training_file}", param="training_file")
        validation_file = body.get("validation_file")
        if validation_file is not None and validation_file not in self._files:
            raise _ApiError(400, f"invalid validation_file: {validation_file}", param="validation_file")
        method = body.get("method") if isinstance(body.get("method"), dict) else None
        hyper = dict(body.get("hyperparameters") or {})
        if method and isinstance(method.get("supervised"), dict):
            hyper.update(method["supervised"].get("hyperparameters") or {})
        hyperparameters = {key: hyper.get(key, "auto") for key in _AUTO_HYPERPARAMETERS}
        now = time.time()
        job_id = self._id("ftjob-")
        seed = body.get("seed")
        if not isinstance(seed, int):
            seed = int(hashlib.sha256(job_id.encode()).hexdigest()[:8], 16) % 2**31
        data: dict[str, Any] = {
            "id": job_id,
            "object": "fine_tuning.job",
            "created_at": int(now),
            "error": None,
            "fine_tuned_model": None,
            "finished_at": None,
            "hyperparameters": hyperparameters,
            "model": model,
            "organization_id": _ORG,
            "result_files": [],
            "seed": seed,
            "status": "validating_files",
            "trained_tokens": None,
            "training_file": training_file,
            "validation_file": validation_file,
            "integrations": body.get("integrations"),
            "estimated_finish": None,
            "metadata": body.get("metadata"),
            "method": {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},
            "user_provided_suffix": body.get("suffix"),
        }
        job = _Job(data=data, stage_started=now)
        self._jobs[job_id] = job
        self._event(job, now, f"Validating training file: {training_file}")
        return copy.deepcopy(data)

    def _event(
        self,
        job: _Job,
        now: float,
        message: str,
        *,
        level: str = "info",
        kind: str = "message",
        data: dict[str, Any] | None = None,
    ) -> None:
        job.events.append(
            {
                "id": self._id("ftevent-"),
                "object": "fine_tuning.job.event",
                "created_at": int(now),
                "level": level,
                "message": message,
                "data": data or {},
                "type": kind,
            }
        )

    def _progress_jobs(self) -> None:
        """Apply the time-based progress that is due (lock held); lazy, so no timer thread needed."""
        step = self.job_step_seconds
        if step is None:
            return
        now = time.time()
        for job in self._jobs.values():
            while job.data["status"] not in _TERMINAL and now - job.stage_started >= step:
                before = job.data["status"]
                # Stages are timed from when the previous one began, not from this read.
                self._advance(job, job.stage_started + step)
                if job.data["status"] == before:  # hung
                    break

    def _advance(self, job: _Job, now: float) -> None:
        """Move a non-terminal job one stage forward (lock held)."""
        data = job.data
        status = data["status"]
        if status == "validating_files":
            content = self._file_bytes.get(data["training_file"])
            error, _ = _validate_training_file(content or b"", min_examples=_MIN_TRAINING_EXAMPLES)
            if content is None:
                error = f"Training file {data['training_file']} was deleted."
            if error is not None:
                self._fail(job, now, "invalid_training_file", error, "training_file")
                return
            if data["validation_file"] is not None:
                content = self._file_bytes.get(data["validation_file"], b"")
                error, _ = _validate_training_file(content, min_examples=1)
                if error is not None:
                    self._fail(job, now, "invalid_validation_file", error, "validation_file")
                    return
            self._event(job, now, "Files validated, moving job to queued state")
        elif status == "queued":
            hyper = data["hyperparameters"]
            for key, value in _AUTO_HYPERPARAMETERS.items():
                if hyper.get(key) in (None, "auto"):
                    hyper[key] = value
            self._event(job, now, "Fine-tuning job started")
        elif status == "running":
            if self.hang_jobs:
                return
            if self.fail_jobs:
                self._fail(job, now, "server_error", "Fine-tuning job failed (simulated).", None)
                return
            self._succeed(job, now)
            return
        data["status"] = _NEXT_STAGE[status]
        job.stage_started = now

    def _succeed(self, job: _Job, now: float) -> None:
        data = job.data
        _, tokens = _validate_training_file(self._file_bytes.get(data["training_file"], b""), min_examples=0)
        epochs = data["hyperparameters"].get("n_epochs")
        epochs = epochs if isinstance(epochs, int) else _AUTO_HYPERPARAMETERS["n_epochs"]
        for step in range(1, 4):  # a few metrics events, like the real training log
            loss = round(1.0 / (step + 1), 4)
            self._event(
                job,
                now,
                f"Step {step}/3: training loss={loss}",
                kind="metrics",
                data={"step": step, "train_loss": loss, "total_steps": 3},
            )
        base = data["model"].split(":")[1] if data["model"].startswith("ft:") else data["model"]
        suffix = data.get("user_provided_suffix") or ""
        data["fine_tuned_model"] = f"ft:{base}:distillkit:{suffix}:{data['id'][-8:]}"
        data["trained_tokens"] = tokens * epochs
        data["finished_at"] = int(now)
        data["status"] = "succeeded"
        job.stage_started = now
        self._event(job, now, f"New fine-tuned model created: {data['fine_tuned_model']}")
        self._event(job, now, "The job has successfully completed")

    def _fail(self, job: _Job, now: float, code: str, message: str, param: str | None) -> None:
        job.data["status"] = "failed"
        job.data["error"] = {"code": code, "message": message, "param": param}
        job.data["finished_at"] = int(now)
        job.stage_started = now
        self._event(job, now, f"The job failed: {message}", level="error")
