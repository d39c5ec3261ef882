"""Shadow checks: is a distilled model still answering like its teacher?

A sampled share (``shadow_rate``) of the requests the distilled model answered is also sent to
the teacher, in the background (never on the caller's path, never routed nor captured). The two
answers are compared (:func:`distillkit.routing.agreement.compare`) and the running count and
mean are kept per namespace and model in the store's ``shadow`` records. Once a model's mean agreement over at least
``shadow_min_samples`` checks falls under ``shadow_floor``, it is demoted: the namespace's
registry entry is removed (so the teacher answers again until a new model is trained) and a
``demotion`` record says why.

Every check also becomes a label for the error budget (:mod:`distillkit.routing.budget`) when the
routing signals of the request are given: the similarity of its nearest trained neighbour and
that neighbour's answer class, with whether the student agreed. Exploration uses
the same machinery: a would-be-routed request the teacher answered is also sent to the student
in the background (:meth:`ShadowChecks.start_student`), which labels regions the budget refuses.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from distillkit.errors import ConfigError
from distillkit.routing.agreement import Comparison, compare, exact_for
from distillkit.state import DEMOTION_KIND, SHADOW_KIND
from distillkit.streams import response_message

if TYPE_CHECKING:
    from distillkit.routing.budget import ErrorBudget
    from distillkit.routing.confidence import StudentAnswer
    from distillkit.routing.labels import Signals
    from distillkit.state import ModelRegistry
    from distillkit.store.base import Store

__all__ = ["ShadowChecks"]

logger = logging.getLogger("distillkit")


def _check(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ConfigError(f"{name}={value!r} is not in [{low}, {high}].", variable=name, fix=f"Use {low} to {high}.")


class ShadowChecks:
    """Runs shadow checks in daemon threads and records them (see the module docstring)."""

    def __init__(
        self,
        store: Callable[[], Store],
        registry: ModelRegistry,
        *,
        rate: float,
        floor: float,
        min_samples: int,
        max_in_flight: int = 4,
        budget: ErrorBudget | None = None,
        exact_fields: Collection[str] = (),
    ) -> None:
        _check("shadow_rate", rate, 0.0, 1.0)
        _check("shadow_floor", floor, 0.0, 1.0)
        if isinstance(min_samples, bool) or not isinstance(min_samples, int) or min_samples < 1:
            raise ConfigError(
                f"shadow_min_samples={min_samples!r} is not a positive integer.",
                variable="shadow_min_samples",
                fix="Use e.g. 20.",
            )
        self.rate, self.floor, self.min_samples = rate, floor, min_samples
        self._store = store
        self._registry = registry
        #: Where labels go (None: checks are only recorded for demotion).
        self.budget = budget
        #: ``DISTILLKIT_EXACT_FIELDS``: JSON fields compared as they are (see :func:`exact_for`).
        self.exact_fields = tuple(exact_fields)
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._pending = {"thread": 0, "task": 0}  # checks in flight, in threads and in asyncio tasks
        self._idle = threading.Condition()
        self._record_lock = threading.Lock()
        self._random = random.Random()
        self._tasks: set[asyncio.Task[None]] = set()

    def sample(self) -> bool:
        """Whether this routed request gets a shadow check."""
        return self.rate > 0 and self._random.random() < self.rate

    def _begin(self, kind: str) -> bool:
        if not self._slots.acquire(blocking=False):
            return False  # too many in flight: skip this one rather than pile up
        with self._idle:
            self._pending[kind] += 1
        return True

    def _end(self, kind: str) -> None:
        self._slots.release()
        with self._idle:
            self._pending[kind] -= 1
            self._idle.notify_all()

    def start(
        self,
        namespace: str,
        model: str,
        kwargs: dict[str, Any],
        student: dict[str, Any] | None,
        teacher_call: Callable[[], dict[str, Any] | None],
        *,
        signals: Signals | None = None,
        source: str = "shadow",
    ) -> bool:
        """Ask the teacher in a daemon thread and record the agreement; False when skipped.

        With ``signals`` (what the router saw), the outcome is also a label of ``source``.
        """
        if not self._begin("thread"):
            return False

        def check() -> None:
            teacher = teacher_call()
            self.record(namespace, model, self._compare(namespace, kwargs, student, teacher).score)
            self._label(namespace, kwargs, student, teacher, signals, source)

        self._thread("distillkit-shadow", "a shadow check", check)
        return True

    def astart(
        self,
        namespace: str,
        model: str,
        kwargs: dict[str, Any],
        student: dict[str, Any] | None,
        teacher_call: Callable[[], Awaitable[dict[str, Any] | None]],
        *,
        signals: Signals | None = None,
        source: str = "shadow",
    ) -> bool:
        """:meth:`start` for async clients: the check is a task on the caller's running loop."""
        if not self._begin("task"):
            return False

        async def check() -> None:
            teacher = await teacher_call()
            score = self._compare(namespace, kwargs, student, teacher).score
            await asyncio.to_thread(self.record, namespace, model, score)  # store I/O off the loop
            await asyncio.to_thread(self._label, namespace, kwargs, student, teacher, signals, source)

        self._spawn("a shadow check", check())
        return True

    def start_student(
        self,
        namespace: str,
        kwargs: dict[str, Any],
        teacher: dict[str, Any] | None,
        student_call: Callable[[], StudentAnswer],
        signals: Signals,
    ) -> bool:
        """Exploration where the teacher answered: ask the student in a daemon thread, keep a label.

        Not recorded for demotion: these are requests the router did not send to the student.
        """
        if self.budget is None or not self._begin("thread"):
            return False

        def check() -> None:
            answer = student_call()
            mine = replace(signals, confidence=answer.confidence)
            self._label(namespace, kwargs, answer.message, teacher, mine, "explore")

        self._thread("distillkit-explore", "an exploration check", check)
        return True

    def astart_student(
        self,
        namespace: str,
        kwargs: dict[str, Any],
        teacher: dict[str, Any] | None,
        student_call: Callable[[], Awaitable[StudentAnswer]],
        signals: Signals,
    ) -> bool:
        """:meth:`start_student` for async clients (a task on the caller's running loop)."""
        if self.budget is None or not self._begin("task"):
            return False

        async def check() -> None:
            answer = await student_call()
            mine = replace(signals, confidence=answer.confidence)
            await asyncio.to_thread(self._label, namespace, kwargs, answer.message, teacher, mine, "explore")

        self._spawn("an exploration check", check())
        return True

    def label_withheld(
        self, namespace: str, kwargs: dict[str, Any], student: dict[str, Any], result: Any, signals: Signals
    ) -> bool:
        """The student's answer was withheld (too unsure) and the teacher answered: both are at hand,
        so they make a label at no extra call, in a daemon thread (the caller is not kept)."""
        if self.budget is None or not self._begin("thread"):
            return False

        def check() -> None:
            teacher, _ = response_message(result)
            self._label(namespace, kwargs, student, teacher, signals, "explore")

        self._thread("distillkit-withheld", "a withheld answer's label", check)
        return True

    def _thread(self, name: str, what: str, check: Callable[[], None]) -> None:
        """Run a check begun with ``_begin("thread")`` in a daemon thread; a failure is a warning."""

        def run() -> None:
            try:
                check()
            except Exception as exc:
                logger.warning("distillkit: %s failed: %s", what, type(exc).__name__)
            finally:
                self._end("thread")

        threading.Thread(target=run, name=name, daemon=True).start()

    def _spawn(self, what: str, check: Coroutine[Any, Any, None]) -> None:
        """Run a check begun with ``_begin("task")`` as a task on the running loop; a failure is a warning."""

        async def run() -> None:
            try:
                await check
            except Exception as exc:
                logger.warning("distillkit: %s failed: %s", what, type(exc).__name__)
            finally:
                self._end("task")

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)  # the loop keeps only a weak reference to its tasks
        task.add_done_callback(self._tasks.discard)

    def _label(
        self,
        namespace: str,
        kwargs: Mapping[str, Any],
        student: Mapping[str, Any] | None,
        teacher: Mapping[str, Any] | None,
        signals: Signals | None,
        source: str,
    ) -> None:
        if self.budget is None or signals is None or teacher is None or not signals.consistent(student):
            return  # (an answer the cross-check stops never reaches a caller: no label)
        agreed = self._compare(namespace, kwargs, student, teacher, repeating=signals.repeating).agreed
        self.budget.add(namespace, [signals.label(agreed, "explore" if source == "explore" else "shadow")])

    def _compare(
        self,
        namespace: str,
        kwargs: Mapping[str, Any],
        student: Mapping[str, Any] | None,
        teacher: Mapping[str, Any] | None,
        *,
        repeating: bool = False,
    ) -> Comparison:
        return compare(
            kwargs, student, teacher, repeating=repeating, exact_fields=exact_for(self.exact_fields, namespace)
        )

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until no check is in flight. False if ``timeout`` ran out first.

        Called on a thread running an event loop, it waits only for the checks in threads:
        blocking that loop would keep its own shadow tasks from ever finishing.
        """
        try:
            asyncio.get_running_loop()
            kinds: tuple[str, ...] = ("thread",)
        except RuntimeError:
            kinds = ("thread", "task")
        with self._idle:
            return self._idle.wait_for(lambda: all(self._pending[k] == 0 for k in kinds), timeout)

    def record(self, namespace: str, model: str, score: float) -> None:
        """Add one check to the model's record; demote the model when it falls under the floor."""
        store = self._store()
        key = f"{namespace}:{model}"
        with self._record_lock:
            saved = store.get_record(SHADOW_KIND, key) or {}
            samples = int(saved.get("samples") or 0) + 1
            total = float(saved.get("agreement_sum") or 0.0) + score
            mean = total / samples
            store.put_record(
                SHADOW_KIND,
                key,
                {
                    "namespace": namespace,
                    "model": model,
                    "samples": samples,
                    "agreement_sum": total,
                    "mean_agreement": round(mean, 4),
                    "updated_at": time.time(),
                },
            )
            if samples < self.min_samples or mean >= self.floor:
                return
            active = self._registry.get(namespace)
            if active is None or active.model != model:
                return
            reason = f"shadow agreement {mean:.3f} < floor {self.floor} over {samples} checks"
            store.put_record(
                DEMOTION_KIND,
                namespace,
                {
                    "namespace": namespace,
                    "model": model,
                    "mean_agreement": round(mean, 4),
                    "samples": samples,
                    "floor": self.floor,
                    "at": time.time(),
                    "reason": reason,
                },
            )
            self._registry.deactivate(namespace)
        logger.warning("distillkit: %s demoted in %r (%s); the teacher answers", model, namespace, reason)
