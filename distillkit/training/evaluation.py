"""The promotion gate: a candidate model answers held-out captures before it may serve.

Each training round keeps a share of its pending points out of the training file
(:func:`split_holdout`). Once the job succeeded, the candidate answers those points through the
same serving path routed requests take, and its answers are compared with the teacher's stored
ones (:func:`agrees`). The candidate becomes the namespace's active model only when the share of
agreeing answers reaches the floor (:func:`evaluate`); otherwise nothing is flipped, the active
model stays, and the held-out points train in the next round like every other pending point.

Answers are compared by :func:`distillkit.routing.agreement.compare` (by their shape: JSON and
tool calls field by field, repeating and short answers exactly, other free text by similarity), the
one comparison of the gate, shadow checks, exploration and the cross-check; in judge mode
(``DISTILLKIT_JUDGE=teacher``) free text is judged by the teacher (:data:`JUDGE_PROMPT`). JSON
answers are reported field by field (:attr:`Evaluation.fields`).

The verdict: ``promoted`` when the held-out agreement reaches the floor (or the labels certify an
acceptance of their own, :func:`~distillkit.training.gate.judge_candidate`); below it, ``rejected``
only when the exact binomial upper bound (Clopper-Pearson, :data:`VERDICT_CONFIDENCE`) stays below
the floor too, else ``undecided``: too few points to tell a bad candidate from an unlucky sample, so
nothing is activated and the points train in the next round. How many routed
answers may be wrong is the error budget's job, certified on these same labels, not the floor's.

Near-duplicates stay on one side of the split: points whose vectors are at least
``group_similarity`` cosine-similar are grouped (transitively), and a group is held out or trained
whole, so a paraphrase twin of a held-out point cannot be in the training file. The default
(:data:`GROUP_SIMILARITY`) is above the default routing threshold (0.9), so held-out points still
cover the region the router routes, and below the capture's own de-duplication (0.99), which
already merged verbatim repeats. Which groups are held out depends only on a hash of their points'
keys (the gate passes each request's fingerprint and text; the ids by default): the same traffic
always splits the same way, whatever random ids its points were given.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np

from distillkit.errors import DistillkitError
from distillkit.routing.acceptance import upper_bound
from distillkit.routing.agreement import (
    SHORT_ANSWER_WORDS,
    TEXT_SIMILARITY,
    agrees,
    answer_class,
    answer_key,
    compare,
    free_text,
)
from distillkit.routing.confidence import StudentAnswer

__all__ = [
    "GROUP_SIMILARITY",
    "JUDGE_PROMPT",
    "SHORT_ANSWER_WORDS",
    "TEXT_SIMILARITY",
    "Evaluation",
    "EvaluationError",
    "HeldOutResult",
    "Holdout",
    "agrees",
    "evaluate",
    "holdout_size",
    "request_of",
    "split_holdout",
]

logger = logging.getLogger("distillkit")


class EvaluationError(DistillkitError, RuntimeError):
    """The candidate could not be evaluated (nothing held out, or too many of its calls failed)."""


#: Cosine similarity at or above which two pending points count as near-duplicates (one group).
GROUP_SIMILARITY = 0.95
#: The verdict counts only the held-out points the router would route when there are at least this
#: many of them, else every held-out point: on fewer, one answer moves a 0.8 floor's verdict by
#: more than 0.05 (measured: rounds rejected at 7/9 and 8/11 routable points on BANKING77).
MIN_ROUTABLE_VERDICT = 20

Verdict = Literal["promoted", "rejected", "undecided"]
#: One-sided confidence of each end of the verdict's interval.
VERDICT_CONFIDENCE = 0.9

#: The teacher-as-judge instruction (judge mode): the reply must start with yes or no.
JUDGE_PROMPT = (
    "You compare two answers to the same request. Reply with one word: yes if the candidate answer "
    "gives the user the same information and outcome as the reference answer, otherwise no."
)

#: Sends a request (chat-completion keywords, ``model`` set to the candidate) to the candidate
#: through the serving path and returns its assistant message (``content``, ``tool_calls``).
StudentFn = Callable[[dict[str, Any]], "StudentAnswer | Mapping[str, Any] | None"]
#: Judge mode: (request keywords, student message, teacher message) → do they say the same?
JudgeFn = Callable[[dict[str, Any], "Mapping[str, Any] | None", "Mapping[str, Any] | None"], bool]


# --- the split ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Holdout:
    """How one round's pending points are split.

    Attributes:
        train: ids that go into the training file.
        held_out: ids kept out, answered by the candidate after the job.
        groups: how many near-duplicate groups the points formed.
        reason: why nothing is held out, when nothing is.
    """

    train: list[str]
    held_out: list[str]
    groups: int
    reason: str | None = None


def holdout_size(pending: int, *, share: float, minimum: int, keep: int, most: int | None = None) -> int:
    """How many points a round of ``pending`` points holds out: 0 when it cannot.

    ``ceil(share * pending)``, at least ``minimum``, at most ``most``, leaving at least ``keep`` to
    train on. A round that cannot hold out ``minimum`` points and keep ``keep`` holds out nothing
    (the caller waits for more data rather than activating an unevaluated model).
    """
    if share <= 0 or pending <= 0:
        return 0
    wanted = max(minimum, math.ceil(share * pending))
    if most is not None:
        wanted = max(minimum, min(wanted, most))
    return wanted if pending - wanted >= keep else 0


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """The rows scaled to length 1 (zero rows stay zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


def _groups(vectors: np.ndarray, similarity: float, block: int = 1024) -> list[int]:
    """Union-find roots: points at least ``similarity`` cosine-similar share a root (transitively)."""
    n = len(vectors)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    unit = unit_rows(np.asarray(vectors, dtype=np.float32))
    for start in range(0, n, block):
        sims = unit[start : start + block] @ unit.T
        rows, cols = np.nonzero(sims >= similarity)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            i = start + r
            if c > i:
                a, b = find(i), find(c)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    return [find(i) for i in range(n)]


def _rank(keys: Sequence[str]) -> str:
    return min(hashlib.sha256(k.encode()).hexdigest() for k in keys)


def split_holdout(
    ids: Sequence[str],
    vectors: Sequence[Sequence[float]] | np.ndarray,
    *,
    share: float,
    minimum: int,
    keep: int,
    most: int | None = None,
    group_similarity: float = GROUP_SIMILARITY,
    must_train: Collection[str] = (),
    keys: Mapping[str, str] | None = None,
) -> Holdout:
    """Split a round's pending points into training and held-out ids (see the module docstring).

    Args:
        ids: the pending points' ids.
        vectors: their vectors, in the same order.
        share: the share to hold out (0 holds out nothing).
        minimum: hold out at least this many points, or none.
        keep: leave at least this many points to train on.
        most: hold out at most this many (a bigger evaluation adds little and delays training).
        group_similarity: near-duplicates at or above this cosine similarity stay together.
        must_train: ids that may not be held out (the previous round's held-out points), nor may
            their near-duplicates.
        keys: what each id's place in the order is hashed from (its content); the id if absent.

    Returns:
        The split. Whole groups are taken in the order of their keys' hashes until ``holdout_size``
        points are held out; a group that would leave fewer than ``keep`` to train on is passed over.
    """
    ids = list(ids)
    target = holdout_size(len(ids), share=share, minimum=minimum, keep=keep, most=most)
    if not ids:
        return Holdout([], [], 0, "no pending points")
    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.shape[0] != len(ids):
        raise ValueError(f"{len(ids)} ids but {matrix.shape[0]} vectors")
    roots = _groups(matrix, group_similarity)
    members: dict[int, list[str]] = {}
    for point_id, root in zip(ids, roots, strict=True):
        members.setdefault(root, []).append(point_id)
    named = keys or {}
    groups = sorted(members.values(), key=lambda group: (_rank([named.get(i, i) for i in group]), _rank(group)))
    if target == 0:
        reason = (
            "holding out is off"
            if share <= 0
            else f"{len(ids)} pending points: too few to hold out {max(minimum, 1)} and train on {keep}"
        )
        return Holdout(ids, [], len(groups), reason)
    held: list[str] = []
    fixed = set(must_train)
    for group in groups:
        if len(held) >= target:
            break
        if fixed.intersection(group):
            continue
        if len(ids) - len(held) - len(group) >= keep:
            held.extend(group)
    if len(held) < minimum:
        # Only groups too big to spare were left: better wait for more data than leak a twin.
        return Holdout(ids, [], len(groups), f"too few points that may be held out to hold out {minimum}")
    chosen = set(held)
    return Holdout([i for i in ids if i not in chosen], sorted(held), len(groups))


# --- the evaluation -----------------------------------------------------------------------------


def request_of(payload: Mapping[str, Any], model: str) -> dict[str, Any]:
    """The stored request of a captured point, addressed to ``model``."""
    params = dict(payload.get("params") or {})
    params.pop("stream", None)
    return {**params, "messages": list(payload.get("messages") or []), "model": model}


@dataclass(frozen=True)
class HeldOutResult:
    """One held-out point, answered by the candidate."""

    id: str
    agreed: bool
    error: str | None = None  # the candidate's call failed (counted apart, not as a disagreement)
    #: :func:`~distillkit.routing.budget.answer_class` of the candidate's answer, where the
    #: teacher's answer repeats (what the router's cross-check compares); None otherwise.
    answer_class: str | None = None
    #: The candidate's confidence in its answer (None without token log-probabilities).
    confidence: float | None = None
    #: JSON and tool-call answers: field path → equal to the teacher's.
    fields: dict[str, bool] | None = None
    #: The candidate's answer, kept for the rounds it disagreed on (what it got wrong).
    answer: str | None = None
    #: Beside a wrong answer: the request's last user turn and the teacher's answer.
    query: str | None = None
    teacher: str | None = None


@dataclass
class Evaluation:
    """What the candidate did on the held-out points (stored in the round's history).

    Attributes:
        model: the candidate.
        n: held-out points the verdict counts; ``agreed``: of those, agreeing with the teacher.
        agreement: ``agreed / n`` (0 when n is 0).
        held_out: every held-out point answered; ``agreed_all``: of those, agreeing.
        scope: ``"routable"`` (only held-out points the router would send to the candidate count)
            or ``"all"``.
        floor: the agreement the candidate needed.
        verdict: ``promoted``, ``rejected`` or ``undecided`` (see the module docstring).
        bounds: the agreement's interval ``[lower, upper]``.
        fields: JSON answers: field path → ``[agreed, n]`` over the held-out points.
        failed: held-out points whose call to the candidate failed (not in ``n``).
        mode: ``"rules"`` (structural / exact / similarity) or ``"judge"``.
        reason: why it was rejected, when it was.
        disagreements: up to :data:`WRONG_KEPT` ids of held-out points answered differently.
        results: every held-out point's result (not stored; the labels are made from them).
    """

    model: str
    n: int
    agreed: int
    floor: float
    verdict: Verdict
    held_out: int = 0
    agreed_all: int = 0
    scope: str = "all"
    failed: int = 0
    mode: str = "rules"
    reason: str | None = None
    disagreements: list[str] = field(default_factory=list)
    results: list[HeldOutResult] = field(default_factory=list, repr=False)
    bounds: tuple[float, float] = (0.0, 1.0)
    fields: dict[str, list[int]] = field(default_factory=dict)
    #: Up to :data:`WRONG_KEPT` disagreeing held-out points: id, question, the candidate's answer,
    #: the teacher's, the JSON fields that differ.
    wrong: list[dict[str, Any]] = field(default_factory=list)
    #: Held-out points whose teacher answer repeats in the round (the cross-check can compare them).
    repeating: int = 0

    @property
    def agreement(self) -> float:
        return self.agreed / self.n if self.n else 0.0

    def as_record(self) -> dict[str, Any]:
        """The JSON-able summary kept in the job history."""
        out = {k: v for k, v in asdict(self).items() if k != "results"}
        out["agreement"] = round(self.agreement, 4)
        out["bounds"] = [round(b, 4) for b in self.bounds]
        return out

    @property
    def field_agreement(self) -> float | None:
        """The share of JSON fields answered as the teacher did, over every held-out point (None: no JSON)."""
        n = sum(counts[1] for counts in self.fields.values())
        return sum(counts[0] for counts in self.fields.values()) / n if n else None

    def promote(self, reason: str) -> Evaluation:
        """This evaluation, promoted for ``reason`` (the labels certify an acceptance of their own)."""
        return replace(self, verdict="promoted", reason=reason)


#: Wrong answers kept with a round (each at most 500 + 500 + 300 characters): enough to see what a
#: rejected candidate gets wrong, bounded whatever the round's size.
WRONG_KEPT = 20


def _question(payload: Mapping[str, Any]) -> str:
    """The captured request's text: its routing query, else its last user turn."""
    users = [m for m in payload.get("messages") or [] if isinstance(m, Mapping) and m.get("role") == "user"]
    return str(payload.get("query") or (users[-1].get("content") if users else ""))[:300]


def _text(message: Mapping[str, Any]) -> str:
    return str(message.get("content") or message.get("tool_calls"))[:500]


def _wrong(result: HeldOutResult) -> dict[str, Any]:
    """A wrong held-out answer as the round keeps it: the question, the candidate's answer, the
    teacher's, and the JSON fields that differ."""
    differ = sorted(path for path, same in (result.fields or {}).items() if not same)
    return {
        "id": result.id,
        "query": result.query,
        "answer": result.answer,
        "teacher": result.teacher,
        **({"fields": differ} if differ else {}),
    }


def _repeating(payloads: Sequence[Mapping[str, Any]]) -> set[str]:
    """Answer keys that occur more than once among ``payloads``."""
    seen: dict[str, int] = {}
    for payload in payloads:
        key = answer_key(payload)
        if key is not None:
            seen[key] = seen.get(key, 0) + 1
    return {k for k, count in seen.items() if count > 1}


def evaluate(
    model: str,
    held_out: Sequence[tuple[str, Mapping[str, Any]]],
    student: StudentFn,
    *,
    floor: float,
    context: Sequence[Mapping[str, Any]] = (),
    text_similarity: float = TEXT_SIMILARITY,
    judge: JudgeFn | None = None,
    max_failed_share: float = 0.5,
    counted: Collection[str] | None = None,
    exact_fields: Collection[str] = (),
) -> Evaluation:
    """Ask the candidate ``model`` every held-out point and compare with the teacher's answers.

    Args:
        model: the candidate model's name.
        held_out: ``(id, payload)`` of each held-out point.
        student: sends one request to the candidate through the serving path.
        floor: the agreement needed to promote (0 to 1).
        context: other payloads of the namespace (the round's points): answers that repeat among
            them and the held-out ones are compared exactly.
        text_similarity: the ratio free text must reach (rules mode).
        judge: decide free-text answers with this instead of the similarity (teacher-as-judge
            mode); it gets the request addressed to the teacher's model. Structured, repeating and
            short answers keep their rules.
        max_failed_share: more failed calls than this share raises instead of judging.
        counted: the ids the verdict counts (the held-out points the router would send to the
            candidate); None or too few of them answered (fewer than 1): every held-out point.
        exact_fields: JSON field paths compared without normalisation.

    Raises:
        EvaluationError: nothing was held out, or too many calls to the candidate failed; the
            caller must not promote on such an evaluation.
    """
    if not held_out:
        raise EvaluationError("no held-out points to evaluate the candidate on")
    repeating = _repeating([*context, *(p for _, p in held_out)])
    results: list[HeldOutResult] = []
    for point_id, payload in held_out:
        kwargs = request_of(payload, model)
        teacher = payload.get("response") if isinstance(payload.get("response"), Mapping) else None
        try:
            reply = student(dict(kwargs))
        except Exception as exc:  # a failed call is no evidence either way
            results.append(HeldOutResult(point_id, False, type(exc).__name__))
            continue
        answer, sure = (reply.message, reply.confidence) if isinstance(reply, StudentAnswer) else (reply, None)
        repeats = answer_key(payload) in repeating
        how = compare(
            kwargs, answer, teacher, repeating=repeats, text_similarity=text_similarity, exact_fields=exact_fields
        )
        ok = how.agreed
        if judge is not None and free_text(kwargs, answer, teacher, repeating=repeats):
            teacher_model = str(payload.get("teacher_model") or (payload.get("params") or {}).get("model"))
            try:
                ok = bool(judge(request_of(payload, teacher_model), answer, teacher))
            except Exception as exc:  # the judge failed: no evidence either way
                results.append(HeldOutResult(point_id, False, f"judge {type(exc).__name__}"))
                continue
        klass = answer_class(answer_key({"response": answer})) if repeats and answer is not None else None
        said = None if ok or answer is None else _text(answer)
        results.append(
            HeldOutResult(
                point_id,
                ok,
                answer_class=klass,
                confidence=sure,
                fields=how.fields,
                answer=said,
                query=None if ok else _question(payload),
                teacher=None if ok or teacher is None else _text(teacher),
            )
        )
    failed = sum(r.error is not None for r in results)
    if failed > max_failed_share * len(results):
        errors = sorted({r.error for r in results if r.error})
        raise EvaluationError(f"{failed} of {len(results)} calls to the candidate failed ({', '.join(errors)})")
    every = [r for r in results if r.error is None]
    answered = [r for r in every if r.id in counted] if counted is not None else every
    scope = "routable" if counted is not None and answered else "all"
    if not answered:
        answered = every
    agreed = sum(r.agreed for r in answered)
    n = len(answered)
    share = agreed / n if n else 0.0
    low = 1.0 - upper_bound(n - agreed, n, VERDICT_CONFIDENCE) if n else 0.0
    high = upper_bound(agreed, n, VERDICT_CONFIDENCE) if n else 1.0
    verdict: Verdict
    if n and share >= floor:
        verdict, reason = "promoted", None
    elif high < floor or not n:
        verdict, reason = "rejected", f"agreement {share:.3f} < floor {floor} on {n} held-out (upper bound {high:.3f})"
    else:
        verdict = "undecided"
        reason = (
            f"undecided: agreement {share:.3f} < floor {floor} on {n} held-out, but its upper bound is {high:.3f}; "
            "train on more data (the held-out points train next round) or hold more out"
        )
    per_field: dict[str, list[int]] = {}
    for r in every:
        for path, same in (r.fields or {}).items():
            counts = per_field.setdefault(path, [0, 0])
            counts[0] += same
            counts[1] += 1
    return Evaluation(
        model=model,
        n=len(answered),
        agreed=agreed,
        floor=floor,
        verdict=verdict,
        held_out=len(every),
        agreed_all=sum(r.agreed for r in every),
        scope=scope,
        failed=failed,
        mode="judge" if judge is not None else "rules",
        reason=reason,
        disagreements=[r.id for r in answered if not r.agreed][:WRONG_KEPT],
        results=results,
        bounds=(low, high),
        fields=per_field,
        wrong=[_wrong(r) for r in answered if not r.agreed][:WRONG_KEPT],
        repeating=sum(answer_key(p) in repeating for _, p in held_out),
    )
