"""The promotion gate's store side: which points a round holds out, and how a candidate does on them.

:mod:`distillkit.training.evaluation` compares answers; this module reads the store around it.
:func:`hold_out` picks a round's held-out points (near-duplicates together) and records them;
:func:`judge_candidate` has the candidate answer them and turns the results into the labels the
error budget learns from; :func:`teacher_judge` is the judge mode's comparison, by the teacher model.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from distillkit._context import internal_call
from distillkit.routing.acceptance import fit, labels_needed
from distillkit.routing.agreement import answer_class, answer_key, exact_for
from distillkit.routing.labels import Label
from distillkit.state import HOLDOUT_KIND
from distillkit.training.evaluation import (
    JUDGE_PROMPT,
    MIN_ROUTABLE_VERDICT,
    Evaluation,
    Holdout,
    JudgeFn,
    StudentFn,
    evaluate,
    split_holdout,
    unit_rows,
)

if TYPE_CHECKING:
    from distillkit.config import DistillConfig
    from distillkit.store.base import Store

__all__ = ["hold_out", "judge_candidate", "teacher_judge"]


def hold_out(
    store: Store, ns: str, pending: Sequence[Any], config: DistillConfig, *, most: int, batch: int
) -> tuple[list[str], str | None]:
    """The round's held-out ids (near-duplicates together), or none and why.

    Args:
        store: where the pending points and the namespace's previous hold-out live.
        ns: the namespace.
        pending: the points not yet trained on.
        config: ``holdout``, ``holdout_min`` and ``min_examples`` apply.
        most: held-out points at most.
        batch: points read per store call.
    """
    vectors: dict[str, Any] = {}
    ids = [p.id for p in pending]
    for start in range(0, len(ids), batch):
        for point in store.retrieve(ids[start : start + batch], with_vectors=True):
            if point.vector is not None:
                vectors[point.id] = point.vector
    ids = [i for i in ids if i in vectors]
    previous = store.get_record(HOLDOUT_KIND, ns) or {}
    matrix = np.asarray([vectors[i] for i in ids], dtype=np.float32).reshape(len(ids), -1)
    keys = {p.id: f"{p.payload.get('fingerprint')}\n{p.payload.get('query')}" for p in pending}
    must_train = [str(i) for i in previous.get("ids") or []]

    def split(minimum: int) -> Holdout:
        return split_holdout(
            ids,
            matrix,
            share=config.holdout,
            minimum=minimum,
            keep=config.min_examples,
            most=most,
            must_train=must_train,
            keys=keys,
        )

    # Enough held-out points to certify the namespace at promotion, not just the configured share:
    # twice the labels a perfect record needs (so a region of them can certify where the student is
    # only right in part), when a quarter of the round can spare them.
    certify = 0
    if config.holdout > 0 and config.max_error is not None:
        certify = min(2 * labels_needed(config.max_error), len(ids) // 4, len(ids) - config.min_examples)
    chosen = split(max(config.holdout_min, certify))
    if not chosen.held_out and certify > config.holdout_min:
        chosen = split(config.holdout_min)  # the groups could not spare that many: the share then
    if not chosen.held_out:
        return [], f"promotion gate: {chosen.reason}; waiting for more data"
    store.put_record(HOLDOUT_KIND, ns, {"ids": chosen.held_out, "at": time.time()})
    return chosen.held_out, None


def judge_candidate(
    store: Store,
    ns: str,
    record: Mapping[str, Any],
    model: str,
    *,
    student: StudentFn,
    judge: JudgeFn | None,
    config: DistillConfig,
    batch: int,
) -> tuple[Evaluation, list[Label]]:
    """The candidate answers the held-out points; labels say what the router would have seen.

    A held-out point's label carries the similarity of its nearest neighbour in the candidate's
    training data (this round's trained points, and the points trained before), of the same
    task, that neighbour's answer class, and the candidate's confidence in its answer. A candidate
    whose verdict is not ``promoted`` is promoted still when its labels certify an acceptance of
    their own (:func:`~distillkit.routing.acceptance.fit`): it is measured to serve some region.
    The verdict counts the held-out points the router
    would route (neighbour at or above the configured threshold) when there are at least
    ``MIN_ROUTABLE_VERDICT`` (and ``holdout_min``) of them, else all.
    """
    held = {p.id: p for p in store.retrieve([str(i) for i in record.get("held_out") or []], with_vectors=True)}
    trained: list[Any] = []
    point_ids = [str(i) for i in record.get("point_ids") or []]
    for start in range(0, len(point_ids), batch):
        trained.extend(store.retrieve(point_ids[start : start + batch], with_vectors=True))
    by_task: dict[Any, tuple[np.ndarray, list[Any]]] = {}
    for fp in {p.payload.get("fingerprint") for p in trained}:
        mine = [p for p in trained if p.payload.get("fingerprint") == fp and p.vector is not None]
        if mine:
            by_task[fp] = (unit_rows(np.asarray([p.vector for p in mine], dtype=np.float32)), mine)
    neighbours: dict[str, tuple[float, str | None]] = {}
    for point_id, point in held.items():
        if point.vector is None:
            continue
        fp = point.payload.get("fingerprint")
        found: tuple[float, str | None] | None = None
        if fp in by_task:
            matrix, mine = by_task[fp]
            sims = matrix @ unit_rows(np.asarray([point.vector], dtype=np.float32))[0]
            j = int(np.argmax(sims))
            found = (float(sims[j]), answer_class(answer_key(mine[j].payload)))
        hits = store.search(point.vector, namespace=ns, fingerprint=fp, indexed=True, limit=1)
        if hits and (found is None or hits[0].score > found[0]):
            found = (float(hits[0].score), answer_class(answer_key(hits[0].payload)))
        if found is not None:
            neighbours[point_id] = found
    threshold = config.threshold
    routable = {i for i, (score, _) in neighbours.items() if score >= threshold}
    evaluation = evaluate(
        model,
        [(i, p.payload) for i, p in held.items()],
        student,
        floor=config.promotion_floor,
        context=[p.payload for p in trained],
        judge=judge,
        counted=routable if len(routable) >= max(config.holdout_min, MIN_ROUTABLE_VERDICT) else None,
        exact_fields=exact_for(config.exact_fields, ns),
    )
    # With the cross-check on, a held-out answer that is not its nearest neighbour's would have
    # gone to the teacher: it says nothing about the answers the router lets through.
    checked = config.cross_check is not None
    # Answer classes only where answers repeat (r.answer_class is set then): a class of one answer
    # would block whatever neighbours that one training point, on the strength of one label.
    labels = [
        Label(
            neighbours[r.id][0],
            r.agreed,
            neighbours[r.id][1] if r.answer_class is not None else None,
            "gate",
            confidence=r.confidence,
        )
        for r in evaluation.results
        if r.error is None
        and r.id in neighbours
        and not (checked and r.answer_class is not None and r.answer_class != neighbours[r.id][1])
    ]
    if evaluation.verdict != "promoted" and config.max_error is not None and labels:
        # Wrong on the whole but measured right somewhere: the labels certify where it may serve.
        certified = fit(labels, max_error=config.max_error)
        if certified.certified and certified.accepted:
            evaluation = evaluation.promote(
                f"certified on {certified.accepted} held-out answers by {certified.signal} "
                f"(upper bound of disagreement {certified.bound} <= {config.max_error:g})"
            )
    return evaluation, labels


def teacher_judge(
    client: Any, kwargs: Mapping[str, Any], student: Mapping[str, Any] | None, teacher: Mapping[str, Any] | None
) -> bool:
    """Judge mode: the teacher model says whether the candidate's answer says the same as its own.

    Args:
        client: a synchronous OpenAI client (the caller's own, where one was seen).
        kwargs: the held-out request; its ``model`` is the teacher.
        student: the candidate's assistant message.
        teacher: the teacher's stored assistant message.
    """
    messages = kwargs.get("messages") or []
    question = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), "")
    content = (
        f"Request:\n{question}\n\nReference answer:\n{(teacher or {}).get('content')}\n\n"
        f"Candidate answer:\n{(student or {}).get('content')}"
    )
    with internal_call():
        reply = client.chat.completions.create(
            model=kwargs["model"],
            messages=[{"role": "system", "content": JUDGE_PROMPT}, {"role": "user", "content": content}],
            temperature=0,
        )
    verdict = (reply.choices[0].message.content or "").strip().lower()
    return verdict.startswith("yes")
