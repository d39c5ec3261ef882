"""The promotion gate's parts: comparing answers, the held-out split, the candidate's evaluation."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from distillkit.streams import response_message
from distillkit.testing import Reply, Simulator
from distillkit.training.evaluation import agrees, evaluate, holdout_size, split_holdout

LONG = "Your replacement card was posted yesterday and usually arrives within three to five working days."


def msg(content: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": content, **extra}


def call(name: str, arguments: str, call_id: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def test_short_and_repeating_answers_must_match_exactly_after_whitespace() -> None:
    assert agrees({}, msg("card_arrival"), msg("  card_arrival\n"))
    assert not agrees({}, msg("card_arrived"), msg("card_arrival"))  # one letter is another label
    # A long answer that repeats (a canned reply) is compared exactly too.
    assert agrees({}, msg(LONG.replace("three", "3")), msg(LONG))
    assert not agrees({}, msg(LONG.replace("three", "3")), msg(LONG), repeating=True)


def test_free_text_agrees_by_a_documented_similarity() -> None:
    assert agrees({}, msg(LONG + " Thanks."), msg(LONG))
    unrelated = "Please contact support about your account settings and billing history today."
    assert not agrees({}, msg(unrelated), msg(LONG))
    assert not agrees({}, msg(LONG + " Thanks."), msg(LONG), text_similarity=0.999)


def test_tool_calls_and_json_compare_structurally() -> None:
    teacher = msg(None, tool_calls=[call("lookup", '{"id": 7, "kind": "card"}', "call_a")])
    same = msg(None, tool_calls=[call("lookup", '{"kind":"card","id":7}', "call_b")])  # other id, other spacing
    other = msg(None, tool_calls=[call("lookup", '{"kind":"card","id":8}', "call_c")])
    assert agrees({}, same, teacher)
    assert not agrees({}, other, teacher)
    assert not agrees({}, msg("lookup 7"), teacher)
    kwargs = {"response_format": {"type": "json_object"}}
    assert agrees(kwargs, msg('{"b": 2, "a": 1}'), msg('{"a":1,"b":2}'))
    assert not agrees(kwargs, msg('{"a": 1, "b": 3}'), msg('{"a":1,"b":2}'))


def test_holdout_size_keeps_enough_to_train_and_holds_out_none_when_it_cannot() -> None:
    assert holdout_size(100, share=0.1, minimum=2, keep=10) == 10
    assert holdout_size(12, share=0.1, minimum=2, keep=10) == 2
    assert holdout_size(11, share=0.1, minimum=2, keep=10) == 0  # would leave 9 to train on
    assert holdout_size(100, share=0.0, minimum=2, keep=10) == 0


def vectors(n: int, seed: int = 0, dim: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def test_the_split_is_deterministic_and_sized() -> None:
    ids = [f"00000000-0000-0000-0000-{i:012d}" for i in range(100)]
    vecs = vectors(100)
    split = split_holdout(ids, vecs, share=0.1, minimum=2, keep=10)
    assert len(split.held_out) == 10 and len(split.train) == 90
    assert set(split.held_out).isdisjoint(split.train) and set(split.held_out) | set(split.train) == set(ids)
    order = np.random.default_rng(1).permutation(100)
    again = split_holdout([ids[i] for i in order], vecs[order], share=0.1, minimum=2, keep=10)
    assert again.held_out == split.held_out  # the order points come in does not matter


def test_the_same_traffic_splits_the_same_way_whatever_ids_its_points_got() -> None:
    texts = [f"question {i}" for i in range(100)]
    vecs = vectors(100, seed=2)

    def held_texts(ids: list[str]) -> set[str]:
        split = split_holdout(ids, vecs, share=0.1, minimum=2, keep=10, keys=dict(zip(ids, texts, strict=True)))
        return {texts[ids.index(i)] for i in split.held_out}

    first = held_texts([f"a{i}" for i in range(100)])
    assert len(first) == 10
    assert held_texts([f"b{i}" for i in range(100)]) == first  # captured again: new random ids
    # Without keys the ids decide, so other ids hold out other points.
    unkeyed = split_holdout([f"b{i}" for i in range(100)], vecs, share=0.1, minimum=2, keep=10)
    assert {texts[int(i[1:])] for i in unkeyed.held_out} != first


def test_near_duplicates_stay_on_one_side() -> None:
    ids = [f"p{i}" for i in range(40)]
    vecs = vectors(40, seed=3)
    # Every even point gets a paraphrase twin: the next point, almost the same vector.
    for i in range(0, 40, 2):
        vecs[i + 1] = vecs[i] + 0.01 * vectors(1, seed=100 + i)[0]
    split = split_holdout(ids, vecs, share=0.25, minimum=2, keep=10)
    assert split.groups == 20 and len(split.held_out) == 10
    held = set(split.held_out)
    for i in range(0, 40, 2):
        assert (ids[i] in held) == (ids[i + 1] in held)


def test_a_round_too_small_holds_out_nothing_and_says_why() -> None:
    split = split_holdout([f"p{i}" for i in range(11)], vectors(11), share=0.1, minimum=2, keep=10)
    assert split.held_out == [] and len(split.train) == 11
    assert split.reason is not None and "too few" in split.reason
    # One big group of near-duplicates cannot be held out without starving the training file.
    same = np.repeat(vectors(1), 12, axis=0)
    split = split_holdout([f"q{i}" for i in range(12)], same, share=0.1, minimum=2, keep=10)
    assert split.held_out == [] and split.reason is not None and "too few points that may be held out" in split.reason


def test_the_previous_rounds_held_out_points_and_their_twins_train_next() -> None:
    ids = [f"p{i}" for i in range(100)]
    vecs = vectors(100, seed=4)
    vecs[1] = vecs[0] + 0.001  # p1 is p0's twin
    first = split_holdout(ids, vecs, share=0.1, minimum=2, keep=10, most=5)
    assert len(first.held_out) == 5
    must = set(first.held_out) | {"p0"}
    second = split_holdout(ids, vecs, share=0.1, minimum=2, keep=10, most=5, must_train=must)
    assert len(second.held_out) == 5 and not must.intersection(second.held_out) and "p1" not in second.held_out


def teacher_answer(request: dict[str, Any]) -> str | Reply:
    text = request["messages"][-1]["content"]
    return f"answer to {text}"


@pytest.fixture
def sim() -> Iterator[Simulator]:
    def student(request: dict[str, Any]) -> str | Reply:
        text = request["messages"][-1]["content"]
        return "something else" if "wrong" in text else teacher_answer(request)

    with Simulator(answer=teacher_answer, student_answer=student) as s:
        s.add_model("ft:candidate")
        yield s


def stored(text: str) -> dict[str, Any]:
    messages = [{"role": "user", "content": text}]
    return {
        "messages": messages,
        "params": {"model": "gpt-4.1", "temperature": 0},
        "response": {"role": "assistant", "content": f"answer to {text}"},
    }


def test_the_candidate_answers_held_out_points_over_http(sim: Simulator) -> None:
    client = sim.client()

    def student(kwargs: dict[str, Any]) -> dict[str, Any] | None:
        return response_message(client.chat.completions.create(**kwargs))[0]

    held = [(f"id{i}", stored(f"question {i}")) for i in range(8)]
    good = evaluate("ft:candidate", held, student, floor=0.9)
    assert (good.verdict, good.n, good.agreed, good.agreement) == ("promoted", 8, 8, 1.0)
    assert good.scope == "all" and good.held_out == 8
    assert all(r["model"] == "ft:candidate" for r in sim.chat_requests())

    held += [(f"bad{i}", stored(f"wrong question {i}")) for i in range(2)]
    unsure = evaluate("ft:candidate", held, student, floor=0.9)
    # 8 of 10 is under the floor, but 10 points cannot tell it from a 0.9 candidate's unlucky sample.
    assert unsure.verdict == "undecided" and unsure.agreement == 0.8 and unsure.bounds[1] >= 0.9
    assert sorted(unsure.disagreements) == ["bad0", "bad1"]
    assert [w["id"] for w in unsure.wrong] == ["bad0", "bad1"] and all(w["answer"] for w in unsure.wrong)
    # What a rejected candidate got wrong can be read: the question, its answer and the teacher's.
    assert unsure.wrong[0]["query"] == "wrong question 0"
    assert unsure.wrong[0]["teacher"] == "answer to wrong question 0" != unsure.wrong[0]["answer"]
    bad = evaluate(
        "ft:candidate", held + [(f"bad{i}", stored(f"wrong question {i}")) for i in range(2, 12)], student, floor=0.9
    )
    assert bad.verdict == "rejected" and bad.bounds[1] < 0.9
    # Counting only the points the router would route to the candidate:
    routable = evaluate("ft:candidate", held, student, floor=0.9, counted={f"id{i}" for i in range(8)})
    assert (routable.verdict, routable.scope, routable.n, routable.held_out, routable.agreed_all) == (
        "promoted",
        "routable",
        8,
        10,
        8,
    )
    record = unsure.as_record()
    assert json.loads(json.dumps(record))["agreement"] == 0.8 and "results" not in record


def test_an_evaluation_that_cannot_reach_the_candidate_raises(sim: Simulator) -> None:
    client = sim.client(max_retries=0)
    sim.inject("chat", status=500, times=100)

    def student(kwargs: dict[str, Any]) -> dict[str, Any] | None:
        return response_message(client.chat.completions.create(**kwargs))[0]

    with pytest.raises(RuntimeError, match="calls to the candidate failed"):
        evaluate("ft:candidate", [(f"id{i}", stored(f"q {i}")) for i in range(4)], student, floor=0.9)
    with pytest.raises(RuntimeError, match="no held-out"):
        evaluate("ft:candidate", [], student, floor=0.9)


def test_judge_mode_decides_free_text_only(sim: Simulator) -> None:
    client = sim.client()

    def student(kwargs: dict[str, Any]) -> dict[str, Any] | None:
        return response_message(client.chat.completions.create(**kwargs))[0]

    asked: list[str] = []

    def lenient(kwargs: dict[str, Any], answer: Any, teacher: Any) -> bool:
        asked.append(kwargs["model"])
        return bool(answer and answer.get("content"))

    wrong = [(f"bad{i}", stored(f"wrong question {i}")) for i in range(3)]
    assert evaluate("ft:candidate", wrong, student, floor=0.9, judge=lenient).verdict == "rejected"
    assert asked == []  # short answers keep the exact rule
    long = [(f"long{i}", stored(f"wrong question {i} " + LONG)) for i in range(3)]
    for _, payload in long:
        payload["teacher_model"] = "gpt-4.1"
    judged = evaluate("ft:candidate", long, student, floor=0.9, judge=lenient)
    assert judged.verdict == "promoted" and judged.mode == "judge" and asked == ["gpt-4.1"] * 3
