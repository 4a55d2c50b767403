"""Metric functions against hand-computed cases and against scikit-learn."""

import itertools
import json

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score, recall_score

from sertune.metrics import classification_metrics, fairness_metrics, summarize_folds

LABELS4 = ["neu", "ang", "sad", "hap"]


def test_hand_computed_confusion():
    y_true = [0, 0, 0, 0, 1, 1, 2, 2, 2, 3]
    y_pred = [0, 0, 1, 2, 1, 0, 2, 2, 2, 3]
    m = classification_metrics(y_true, y_pred, LABELS4)
    assert m["confusion"] == [[2, 1, 1, 0], [1, 1, 0, 0], [0, 0, 3, 0], [0, 0, 0, 1]]
    assert m["support"] == {"neu": 4, "ang": 2, "sad": 3, "hap": 1}
    assert m["per_class_recall"] == pytest.approx({"neu": 50.0, "ang": 50.0, "sad": 100.0, "hap": 100.0})
    assert m["uar"] == pytest.approx(75.0)
    assert m["accuracy"] == pytest.approx(70.0)
    # F1 = 2TP / (predicted + true): 4/7, 2/4, 6/7, 2/2
    assert m["macro_f1"] == pytest.approx(100 * (4 / 7 + 1 / 2 + 6 / 7 + 1) / 4)
    assert m["absent_classes"] == []
    assert m["n"] == 10
    json.dumps(m)  # stored as metrics.json as is


def test_class_missing_from_predictions_counts_as_zero_recall():
    m = classification_metrics([0, 0, 1, 1, 2, 2], [0, 0, 0, 0, 2, 2], ["a", "b", "c"])
    assert m["per_class_recall"] == pytest.approx({"a": 100.0, "b": 0.0, "c": 100.0})
    assert m["uar"] == pytest.approx(200 / 3)
    # F1: a = 4/6, b = 0, c = 1
    assert m["macro_f1"] == pytest.approx(100 * (4 / 6 + 0 + 1) / 3)
    assert m["confusion"][1] == [2, 0, 0]


# scikit-learn warns that y_pred holds a class absent from y_true: exactly the case under test.
@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_class_missing_from_reference_is_left_out_of_uar():
    y_true, y_pred = [0, 0, 1, 1], [0, 2, 1, 1]
    m = classification_metrics(y_true, y_pred, ["a", "b", "c"])
    assert m["per_class_recall"] == {"a": 50.0, "b": 100.0, "c": None}
    assert m["absent_classes"] == ["c"]
    assert m["uar"] == pytest.approx(75.0)
    assert m["uar"] == pytest.approx(100 * balanced_accuracy_score(y_true, y_pred))
    # scikit-learn's default macro recall would count c with recall 0 (50%): the convention differs.
    assert 100 * recall_score(y_true, y_pred, average="macro", zero_division=0) == pytest.approx(50.0)
    # The wrong "c" prediction still costs: it is the missed half of a's recall. F1: a 2/3, b 1.
    assert m["macro_f1"] == pytest.approx(100 * (2 / 3 + 1) / 2)
    assert m["confusion"][2] == [0, 0, 0]


def test_perfect_and_all_wrong():
    y = [0, 1, 2, 3, 0, 1]
    perfect = classification_metrics(y, y, LABELS4)
    assert (perfect["uar"], perfect["accuracy"], perfect["macro_f1"]) == (100.0, 100.0, 100.0)
    wrong = classification_metrics(y, [(v + 1) % 4 for v in y], LABELS4)
    assert (wrong["uar"], wrong["accuracy"], wrong["macro_f1"]) == (0.0, 0.0, 0.0)
    assert np.trace(np.array(wrong["confusion"])) == 0


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_sklearn_on_random_data(seed):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 5, size=400)
    y_pred = np.where(rng.random(400) < 0.6, y_true, rng.integers(0, 5, size=400))
    m = classification_metrics(y_true, y_pred, list("abcde"))
    assert m["uar"] == pytest.approx(100 * recall_score(y_true, y_pred, average="macro"))
    assert m["macro_f1"] == pytest.approx(100 * f1_score(y_true, y_pred, average="macro"))
    assert m["accuracy"] == pytest.approx(100 * np.mean(y_true == y_pred))
    # with class 4 removed from the reference (but still predicted)
    keep = y_true != 4
    m = classification_metrics(y_true[keep], y_pred[keep], list("abcde"))
    assert m["uar"] == pytest.approx(100 * balanced_accuracy_score(y_true[keep], y_pred[keep]))


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="outside"):
        classification_metrics([0, 4], [0, 1], LABELS4)
    with pytest.raises(ValueError, match="items"):
        classification_metrics([0, 1], [0], LABELS4)
    with pytest.raises(ValueError, match="empty"):
        classification_metrics([], [], LABELS4)
    with pytest.raises(ValueError, match="integer"):
        classification_metrics([0.0, 1.0], [0, 1], LABELS4)


def test_fairness_hand_computed():
    # F: prediction rates a 1/5, b 3/5, c 1/5; recalls a 1/2, b 1, c 1
    # M: prediction rates a 4/6, b 1/6, c 1/6; recalls a 1, b 1/3, c undefined (no true c)
    y_true = [0, 0, 1, 1, 2, 0, 0, 0, 1, 1, 1]
    y_pred = [0, 1, 1, 1, 2, 0, 0, 0, 0, 2, 1]
    groups = ["F"] * 5 + ["M"] * 6
    f = fairness_metrics(y_true, y_pred, groups, ["a", "b", "c"])
    assert f["statistical_parity"] == pytest.approx(100 * (4 / 6 - 1 / 5))
    assert f["statistical_parity_class"] == "a"
    assert f["equality_of_opportunity"] == pytest.approx(100 * (1 - 1 / 3))
    assert f["equality_of_opportunity_class"] == "b"
    assert f["eo_skipped_classes"] == ["c"]
    assert f["uar_per_group"] == pytest.approx({"F": 100 * 2.5 / 3, "M": 100 * (4 / 3) / 2})
    assert f["count_per_group"] == {"F": 5, "M": 6}
    assert f["n_groups"] == 2
    json.dumps(f)


def test_fairness_one_group_gives_no_gap():
    y_true, y_pred = [0, 1, 1, 2], [0, 1, 0, 2]
    f = fairness_metrics(y_true, y_pred, ["F"] * 4, ["a", "b", "c"])
    assert f["statistical_parity"] is None
    assert f["equality_of_opportunity"] is None
    assert f["statistical_parity_class"] is None
    assert f["n_groups"] == 1
    assert f["eo_skipped_classes"] == ["a", "b", "c"]
    overall = classification_metrics(y_true, y_pred, ["a", "b", "c"])
    assert f["uar_per_group"]["F"] == pytest.approx(overall["uar"])


def test_fairness_perfect_predictions_have_zero_opportunity_gap():
    y = [0, 1, 2, 0, 1, 2]
    f = fairness_metrics(y, y, ["F", "F", "F", "M", "M", "M"], ["a", "b", "c"])
    assert f["equality_of_opportunity"] == 0.0
    assert f["statistical_parity"] == 0.0


def test_fairness_many_groups_matches_pairwise_brute_force():
    rng = np.random.default_rng(3)
    y_true = rng.integers(0, 4, 300)
    y_pred = np.where(rng.random(300) < 0.5, y_true, rng.integers(0, 4, 300))
    groups = rng.choice(["x", "y", "z"], 300)
    f = fairness_metrics(y_true, y_pred, groups, LABELS4)
    sp = eo = 0.0
    for g, h in itertools.combinations("xyz", 2):
        for c in range(4):
            sp = max(sp, abs(np.mean(y_pred[groups == g] == c) - np.mean(y_pred[groups == h] == c)))
            recall = [np.mean(y_pred[(groups == k) & (y_true == c)] == c) for k in (g, h)]
            eo = max(eo, abs(recall[0] - recall[1]))
    assert f["statistical_parity"] == pytest.approx(100 * sp)
    assert f["equality_of_opportunity"] == pytest.approx(100 * eo)


def test_fairness_agrees_with_fairlearn_one_vs_rest():
    from fairlearn.metrics import MetricFrame, selection_rate

    rng = np.random.default_rng(11)
    y_true = rng.integers(0, 4, 400)
    y_pred = np.where(rng.random(400) < 0.6, y_true, rng.integers(0, 4, 400))
    genders = rng.choice(["female", "male"], 400)
    sp = eo = 0.0
    for c in range(4):
        frame = MetricFrame(
            metrics={"selection": selection_rate, "recall": recall_score},
            y_true=(y_true == c).astype(int), y_pred=(y_pred == c).astype(int), sensitive_features=genders,
        )
        gaps = frame.difference()
        sp, eo = max(sp, gaps["selection"]), max(eo, gaps["recall"])
    f = fairness_metrics(y_true, y_pred, genders, LABELS4)
    assert f["statistical_parity"] == pytest.approx(100 * sp)
    assert f["equality_of_opportunity"] == pytest.approx(100 * eo)


def test_summarize_folds_sample_std_nested_keys_and_missing_values():
    folds = [
        {"uar": 60.0, "per_class_recall": {"a": 50.0, "b": None}, "confusion": [[1]], "fair": {"sp": None}},
        {"uar": 70.0, "per_class_recall": {"a": 70.0, "b": 80.0}, "confusion": [[2]], "fair": {"sp": 4.0}},
        {"uar": 80.0, "per_class_recall": {"a": 90.0, "b": 60.0}, "confusion": [[3]], "fair": {"sp": 2.0}},
    ]
    s = summarize_folds(folds)
    assert s["uar"] == pytest.approx({"mean": 70.0, "std": 10.0, "n": 3})
    assert s["per_class_recall.a"] == pytest.approx({"mean": 70.0, "std": 20.0, "n": 3})
    assert s["per_class_recall.b"]["n"] == 2
    assert s["per_class_recall.b"]["std"] == pytest.approx(np.std([80, 60], ddof=1))
    assert s["fair.sp"]["mean"] == pytest.approx(3.0)
    assert "confusion" not in s
    assert summarize_folds(folds, ddof=0)["uar"]["std"] == pytest.approx(np.std([60, 70, 80]))
    single = summarize_folds(folds[:1])
    assert single["uar"] == {"mean": 60.0, "std": None, "n": 1}
    assert single["fair.sp"] == {"mean": None, "std": None, "n": 0}


def test_summarize_real_metric_dicts():
    y_true, groups = [0, 1, 2, 0, 1, 2], list("FFFMMM")
    folds = []
    for y_pred in ([0, 1, 2, 0, 1, 2], [0, 1, 1, 0, 2, 2]):
        m = classification_metrics(y_true, y_pred, ["a", "b", "c"])
        m["fairness"] = fairness_metrics(y_true, y_pred, groups, ["a", "b", "c"])
        folds.append(m)
    s = summarize_folds(folds)
    assert s["uar"]["mean"] == pytest.approx((100 + 100 * 2 / 3) / 2)
    assert s["fairness.uar_per_group.F"]["n"] == 2
    assert "fairness.n_groups" in s and "support.a" in s
