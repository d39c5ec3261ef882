"""Shadow checks: is a distilled model still answering like its teacher?

A sampled share (``shadow_rate``) of the requests the distilled model answered is also sent to
the teacher, in the background (never on the caller's path, never routed nor captured). The two
answers are compared (:func:`agreement`) and the running count and mean are kept per namespace
and model in the store's ``shadow`` records. Once a model's mean agreement over at least
``shadow_min_samples`` checks falls under ``shadow_floor``, it is demoted: the namespace's
registry entry is removed (so the teacher answers again until a new model is trained) and a
``demotion`` record says why.

Every check also becomes a label for the error budget (:mod:`distillkit.routing.budget`) when the
routing signals of the request are given: the similarity of its nearest trained neighbour and
that neighbour's answer class, with whether the student agreed (:func:`agrees`). Exploration uses
the same machinery: a would-be-routed request the teacher answered is also sent to the student
in the background (:meth:`ShadowChecks.start_student`), which labels regions the budget refuses.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any

from distillkit.errors import ConfigError
from distillkit.routing.labels import Label
from distillkit.state import DEMOTION_KIND, SHADOW_KIND

if TYPE_CHECKING:
    from distillkit.routing.budget import ErrorBudget
    from distillkit.routing.labels import Signals
    from distillkit.state import ModelRegistry
    from distillkit.store.base import Store

__all__ = ["SHORT_ANSWER_WORDS", "TEXT_SIMILARITY", "ShadowChecks", "agreement", "agrees", "free_text"]

logger = logging.getLogger("distillkit")

#: Free-text answers agree when their SequenceMatcher ratio is at least this.
TEXT_SIMILARITY = 0.8
#: Answers of at most this many words are compared exactly (after whitespace is collapsed).
SHORT_ANSWER_WORDS = 10


def _calls(message: Mapping[str, Any]) -> list[tuple[Any, Any]]:
    out = []
    for call in message.get("tool_calls") or []:
        function = (call.get("function") if isinstance(call, Mapping) else None) or {}
        arguments = function.get("arguments")
        try:
            parsed = json.loads(arguments) if isinstance(arguments, str) else arguments
        except ValueError:
            parsed = arguments
        out.append((function.get("name"), parsed))
    return out


def agreement(kwargs: Mapping[str, Any], student: Mapping[str, Any] | None, teacher: Mapping[str, Any] | None) -> float:
    """How alike two answers are, from 0 to 1.

    Tool calls (names and parsed arguments) and JSON content (``response_format`` json) must
    match exactly (1 or 0); other text is compared with :class:`difflib.SequenceMatcher`, with
    whitespace collapsed.
    """
    student, teacher = student or {}, teacher or {}
    if student.get("tool_calls") or teacher.get("tool_calls"):
        return float(_calls(student) == _calls(teacher))
    a, b = student.get("content") or "", teacher.get("content") or ""
    response_format = kwargs.get("response_format")
    kind = response_format.get("type") if isinstance(response_format, Mapping) else None
    if kind in ("json_object", "json_schema"):
        try:
            return float(json.loads(a) == json.loads(b))
        except ValueError:
            return float(a == b)
    a, b = " ".join(str(a).split()), " ".join(str(b).split())
    if a == b:
        return 1.0
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def _structured(kwargs: Mapping[str, Any], student: Mapping[str, Any], teacher: Mapping[str, Any]) -> bool:
    if student.get("tool_calls") or teacher.get("tool_calls"):
        return True
    response_format = kwargs.get("response_format")
    kind = response_format.get("type") if isinstance(response_format, Mapping) else None
    return kind in ("json_object", "json_schema")


def agrees(
    kwargs: Mapping[str, Any],
    student: Mapping[str, Any] | None,
    teacher: Mapping[str, Any] | None,
    *,
    repeating: bool = False,
    text_similarity: float = TEXT_SIMILARITY,
) -> bool:
    """Whether the student's answer counts as the teacher's: one rule for the promotion gate, shadow
    checks and exploration.

    * tool calls and JSON output (``response_format`` ``json_object`` / ``json_schema``):
      structurally, names and parsed arguments or parsed values equal;
    * answers that repeat (a label, a canned reply; ``repeating``) or are short
      (``SHORT_ANSWER_WORDS`` words or fewer): equal after whitespace is collapsed;
    * other free text: :class:`difflib.SequenceMatcher` ratio (twice the matched characters over
      both lengths, whitespace collapsed) at least ``text_similarity``.

    Args:
        kwargs: the request (its ``response_format`` says whether the content is JSON).
        student: the student's assistant message.
        teacher: the teacher's assistant message.
        repeating: the teacher's answer is one the namespace sees again and again (compare exactly).
        text_similarity: the SequenceMatcher ratio free text must reach.
    """
    student, teacher = student or {}, teacher or {}
    score = agreement(kwargs, student, teacher)  # 0/1 for tool calls and JSON, a ratio for text
    if free_text(kwargs, student, teacher, repeating=repeating):
        return score >= text_similarity
    return score == 1.0


def free_text(
    kwargs: Mapping[str, Any],
    student: Mapping[str, Any] | None,
    teacher: Mapping[str, Any] | None,
    *,
    repeating: bool = False,
) -> bool:
    """Whether :func:`agrees` compares these answers by similarity (not structurally, not exactly):
    where a judge may decide instead."""
    student, teacher = student or {}, teacher or {}
    if _structured(kwargs, student, teacher) or repeating:
        return False
    return len(str(teacher.get("content") or "").split()) > SHORT_ANSWER_WORDS


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
            self.record(namespace, model, agreement(kwargs, student, teacher))
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
            score = agreement(kwargs, student, teacher)
            await asyncio.to_thread(self.record, namespace, model, score)  # store I/O off the loop
            await asyncio.to_thread(self._label, namespace, kwargs, student, teacher, signals, source)

        self._spawn("a shadow check", check())
        return True

    def start_student(
        self,
        namespace: str,
        kwargs: dict[str, Any],
        teacher: dict[str, Any] | None,
        student_call: Callable[[], dict[str, Any] | None],
        signals: Signals,
    ) -> bool:
        """Exploration where the teacher answered: ask the student in a daemon thread, keep a label.

        Not recorded for demotion: these are requests the router did not send to the student.
        """
        if self.budget is None or not self._begin("thread"):
            return False

        def check() -> None:
            self._label(namespace, kwargs, student_call(), teacher, signals, "explore")

        self._thread("distillkit-explore", "an exploration check", check)
        return True

    def astart_student(
        self,
        namespace: str,
        kwargs: dict[str, Any],
        teacher: dict[str, Any] | None,
        student_call: Callable[[], Awaitable[dict[str, Any] | None]],
        signals: Signals,
    ) -> bool:
        """:meth:`start_student` for async clients (a task on the caller's running loop)."""
        if self.budget is None or not self._begin("task"):
            return False

        async def check() -> None:
            student = await student_call()
            await asyncio.to_thread(self._label, namespace, kwargs, student, teacher, signals, "explore")

        self._spawn("an exploration check", check())
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
        agreed = agrees(kwargs, student, teacher, repeating=signals.repeating)
        label = Label(signals.similarity, agreed, signals.answer_class, "explore" if source == "explore" else "shadow")
        self.budget.add(namespace, [label])

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
