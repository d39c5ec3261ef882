"""The error budget: confidence bounds, the fitted acceptance, labels kept in a real store."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from distillkit.errors import ConfigError
from distillkit.routing.acceptance import Acceptance, _binomial_cdf, fit, min_labels, upper_bound
from distillkit.routing.budget import ErrorBudget
from distillkit.routing.labels import Label
from distillkit.store import EdgeStore, EmbedderInfo


def test_clopper_pearson_bounds_match_known_values() -> None:
    assert upper_bound(0, 59) == pytest.approx(1 - 0.05 ** (1 / 59))
    assert upper_bound(1, 10) == pytest.approx(0.3942, abs=1e-4)  # one-sided 95 %, published tables
    assert upper_bound(5, 100) == pytest.approx(0.1030, abs=1e-3)
    for k, n in ((1, 10), (3, 40), (7, 500)):
        assert _binomial_cdf(k, n, upper_bound(k, n)) == pytest.approx(0.05, abs=1e-6)
    assert upper_bound(0, 0) == 1.0 and upper_bound(4, 4) == 1.0
    assert min_labels(0.05) == 59 and upper_bound(0, 59) <= 0.05 < upper_bound(0, 58)
    assert min_labels(0.05, 0.975) == 72


def labels_from(rng: random.Random, n: int, error_below: float = 0.8, rate: float = 0.4) -> list[Label]:
    """Synthetic labels: the student is always right above ``error_below``, wrong at ``rate`` below."""
    out = []
    for _ in range(n):
        s = rng.uniform(0.6, 1.0)
        out.append(Label(s, not (s < error_below and rng.random() < rate), "c"))
    return out


def true_error(threshold: float, error_below: float = 0.8, rate: float = 0.4) -> float:
    """Disagreement rate of similarity ~ U(0.6, 1) at or above ``threshold``."""
    if threshold >= error_below:
        return 0.0
    return rate * (error_below - threshold) / (1.0 - threshold)


def test_the_fit_keeps_the_true_error_within_the_budget() -> None:
    misses = 0
    thresholds = []
    for seed in range(100):
        labels = [Label(x.similarity, x.agreed) for x in labels_from(random.Random(seed), 400)]
        accepted = fit(labels, max_error=0.05)
        assert accepted.status == "fitted" and accepted.threshold is not None
        assert accepted.bound is not None and accepted.bound <= 0.05
        thresholds.append(accepted.threshold)
        misses += true_error(accepted.threshold) > 0.05
    assert misses <= 10  # a 0.95 bound: about 5 misses in 100 expected, far fewer in practice
    # And it does not give coverage away: the budget allows thresholds down to about 0.72.
    assert sorted(thresholds)[50] < 0.8


def test_a_few_early_disagreements_do_not_close_the_namespace() -> None:
    labels = [Label(0.99, False), *(Label(0.6 + i / 1000, True) for i in range(300))]
    accepted = fit(labels, max_error=0.05)
    assert accepted.status == "fitted" and accepted.threshold == 0.6 and accepted.errors == 1


def test_a_weak_student_is_routed_only_where_it_is_right() -> None:
    right = [Label(0.95 + i / 10000, True) for i in range(100)]
    wrong = [Label(0.6 + i / 1000, i % 2 == 0) for i in range(300)]
    accepted = fit(right + wrong, max_error=0.05)
    assert accepted.status == "fitted" and accepted.threshold is not None and accepted.threshold >= 0.95


def test_too_few_labels_fall_back_and_all_wrong_closes() -> None:
    few = fit([Label(0.95, True)] * 10, max_error=0.05)
    assert few.status == "fallback" and few.decide(0.99, None) == (None, few.reason)
    wrong = fit([Label(0.95, False)] * 80, max_error=0.05)
    assert wrong.status == "closed" and wrong.decide(0.999, None)[0] is False
    loose = fit([Label(0.95, True)] * 12, max_error=0.3)  # a looser budget needs fewer labels
    assert loose.status == "fitted" and loose.decide(0.96, None)[0] is True


def test_an_answer_class_answered_wrong_is_blocked_until_shown_right() -> None:
    base = [Label(0.8 + i / 1000, True, f"c{i}") for i in range(200)]  # answers seen once each
    accepted = fit([*base, Label(0.97, False, "bad")], max_error=0.1)
    assert accepted.status == "fitted" and accepted.blocked == ["bad"] and accepted.errors == 1
    assert accepted.decide(0.99, "bad") == (False, "answer class last answered wrong")
    assert accepted.decide(0.99, "c1")[0] is True and accepted.decide(0.99, "new")[0] is True
    shown = fit([*base, Label(0.97, False, "bad"), Label(0.96, True, "bad")], max_error=0.1)
    assert shown.blocked == [] and shown.decide(0.99, "bad")[0] is True
    # Blocking applies before the namespace has enough labels for a fit of its own.
    early = fit([Label(0.97, False, "bad"), Label(0.9, True, "good")], max_error=0.05)
    assert early.status == "fallback" and early.decide(0.99, "bad")[0] is False
    assert early.decide(0.99, "good")[0] is None


def test_the_latest_label_that_kept_a_class_open_is_left_out_of_the_fit() -> None:
    # Every class: one disagreement, then an agreement (so none is blocked). Counting the last
    # labels would halve the error rate the fit sees.
    labels = [Label(0.9, agreed, f"c{i}") for i in range(100) for agreed in (False, True)]
    accepted = fit(labels, max_error=0.3)
    assert accepted.blocked == [] and accepted.status == "closed"  # 100 of 100 counted labels disagree


def test_a_class_with_enough_labels_gets_its_own_threshold() -> None:
    rng = random.Random(5)
    good = [Label(rng.uniform(0.6, 1.0), True, "easy") for _ in range(200)]
    hard = [Label(s, s > 0.9 or rng.random() < 0.5, "hard") for s in (rng.uniform(0.6, 1.0) for _ in range(600))]
    accepted = fit(good + hard, max_error=0.05)
    easy, strict = accepted.classes["easy"], accepted.classes["hard"]
    assert easy is not None and strict is not None and easy < 0.62 and strict >= 0.89
    assert accepted.decide(0.7, "easy")[0] is True and accepted.decide(0.7, "hard")[0] is False


def test_bad_budgets_are_config_errors() -> None:
    for value in (0.0, 1.0, -0.1, True):
        with pytest.raises(ConfigError):
            fit([], max_error=value)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EdgeStore]:
    s = EdgeStore(tmp_path / "store", EmbedderInfo("test", 4))
    yield s
    s.close()


def test_labels_and_the_fit_live_in_the_store(store: EdgeStore) -> None:
    budget = ErrorBudget(lambda: store, max_error=0.05, max_labels=100)
    assert budget.acceptance("ns") is None
    fitted = budget.add("ns", [Label(0.9 + i / 1000, True) for i in range(80)])
    assert fitted is not None and fitted.status == "fitted"
    budget.add("ns", [Label(0.5, True)] * 50)
    assert len(budget.labels("ns")) == 100  # bounded: the oldest went first
    again = ErrorBudget(lambda: store, max_error=0.05)  # another process reads the same records
    seen = again.acceptance("ns")
    assert seen is not None and seen.labels == 100 and seen.status == "fitted"
    tighter = again.set_max_error("ns", 0.01)  # 100 perfect labels are not enough for 1 %
    assert tighter is not None and tighter.status == "fallback" and again.max_error_for("ns") == 0.01
    assert again.set_max_error("ns", None) is not None and again.max_error_for("ns") == 0.05
    assert budget.acceptance("other") is None


def test_labels_added_at_once_from_many_threads_leave_the_fit_of_them_all(store: EdgeStore) -> None:
    # Shadow and exploration checks label from their own threads. A refit that read the labels
    # before another thread's write must not save its older fit over the newer one.
    budget = ErrorBudget(lambda: store, max_error=0.05)
    wrong = [Label(0.99, False, f"c{i}") for i in range(40)]  # each blocks its class
    ready = threading.Barrier(len(wrong))

    def add(label: Label) -> None:
        ready.wait()
        budget.add("ns", [label])

    threads = [threading.Thread(target=add, args=(label,)) for label in wrong]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    kept = budget.acceptance("ns")
    assert kept is not None and kept.labels == 40 and sorted(kept.blocked) == sorted(f"c{i}" for i in range(40))


def test_the_gate_labels_certify_a_namespace_at_promotion() -> None:
    # Held-out answers at modest similarity (paraphrases at 0.6-0.8, as on datasets unlike BANKING77),
    # all right: they certify a threshold at once, far below the 0.9 default.
    gate = [Label(0.6 + i / 500, True, source="gate") for i in range(100)]
    accepted = fit(gate, max_error=0.05)
    assert accepted.certified and accepted.signal == "similarity"
    assert accepted.threshold is not None and accepted.threshold < 0.65
    assert accepted.decide(0.7, None) == (True, "within the error budget")


def test_the_students_confidence_decides_where_similarity_cannot() -> None:
    # Extraction-like: every request is alike by similarity; the student is right when it is sure.
    rng = random.Random(1)
    labels = []
    for _ in range(300):
        sure = rng.random() < 0.6
        labels.append(
            Label(0.8 + rng.random() / 20, sure or rng.random() < 0.5, confidence=-rng.random() / 20 if sure else -2.0)
        )
    accepted = fit(labels, max_error=0.05)
    assert accepted.certified and accepted.signal in ("confidence", "either") and accepted.min_confidence is not None
    assert -0.06 < accepted.min_confidence <= 0.0
    verdict = accepted.decide(0.81, None)
    assert verdict == (True, "within the error budget if the student is sure")
    assert accepted.min_confidence_for(0.81) == accepted.min_confidence
    # Without confidence, similarity alone certifies nothing here.
    blind = fit([Label(x.similarity, x.agreed) for x in labels], max_error=0.05)
    assert blind.status == "closed" and blind.decide(0.81, None)[0] is False


def test_labels_without_confidence_keep_the_fit_on_similarity() -> None:
    labels = [Label(0.9 + i / 1000, True, confidence=None) for i in range(80)]
    accepted = fit(labels, max_error=0.05)
    assert accepted.signal == "similarity" and accepted.min_confidence_for(0.95) is None


def test_a_label_row_keeps_its_confidence_and_old_rows_read() -> None:
    label = Label(0.9, True, "abc", "gate", 12.0, confidence=-0.25)
    assert Label.from_compact(label.compact()) == label
    assert Label.from_compact([0.9, 1, "abc", "gate", 12.0]).confidence is None  # stored before confidence


def test_a_disagreement_blocks_its_class_only_near_its_own_similarity() -> None:
    # Exploration asks the student about refused requests far below the routed ones: a wrong answer
    # at 0.75 must not refuse a close paraphrase at 0.95 of the same answer class.
    base = [Label(0.8 + i / 1000, True, f"c{i}") for i in range(200)]
    accepted = fit([*base, Label(0.75, False, "intent")], max_error=0.1)
    assert accepted.blocked == ["intent"] and accepted.blocked_at == {"intent": 0.75}
    assert accepted.decide(0.78, "intent") == (False, "answer class last answered wrong")
    assert accepted.decide(0.95, "intent") == (True, "within the error budget")
    assert Acceptance.from_record(accepted.as_record()).is_blocked(0.79, "intent")
