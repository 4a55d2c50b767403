"""Dimensional (arousal/valence/dominance) metrics and losses against hand-computed values.

Most cases use the reference t = [1, 2, 3, 4, 5]: mean 3, deviations (-2, -1, 0, 1, 2), population
variance (4 + 1 + 0 + 1 + 4) / 5 = 2.
"""

import json
import math

import numpy as np
import pytest
import torch

from sertune.dimension_metrics import (
    concordance,
    mean_absolute_error,
    pearson,
    regression_fairness,
    regression_metrics,
    score_dimensions,
)
from sertune.losses import DIMENSION_LOSSES, ccc_loss, dimension_loss, mse_loss

T = [1.0, 2.0, 3.0, 4.0, 5.0]
AVD = ["arousal", "valence", "dominance"]


def columns(*cols):
    """[N, D] array from D equally long columns."""
    return np.column_stack([np.asarray(c, dtype=float) for c in cols])


# --- concordance / pearson / MAE -------------------------------------------------------------------


def test_perfect_agreement():
    assert concordance(T, T) == pytest.approx(1.0)
    assert pearson(T, T) == pytest.approx(1.0)
    assert mean_absolute_error(T, T) == 0.0


def test_constant_prediction_has_ccc_zero_and_no_pearson():
    # cov = 0 whatever the constant, so CCC = 0 exactly; Pearson divides by var_p = 0.
    for constant in (3.0, 0.0, 7.5):
        assert concordance(T, [constant] * 5) == 0.0
        assert pearson(T, [constant] * 5) is None
    assert mean_absolute_error(T, [3.0] * 5) == pytest.approx((2 + 1 + 0 + 1 + 2) / 5)


def test_shifted_prediction():
    # pred = t + 1: cov = 2, var_p = 2, mean gap 1 -> CCC = 2*2 / (2 + 2 + 1) = 0.8
    shifted = [v + 1 for v in T]
    assert pearson(T, shifted) == pytest.approx(1.0)
    assert concordance(T, shifted) == pytest.approx(0.8)
    assert mean_absolute_error(T, shifted) == pytest.approx(1.0)


def test_scaled_prediction():
    # pred = 2t: mean 6, var_p = 4 * 2 = 8, cov = 2 * 2 = 4 -> CCC = 2*4 / (2 + 8 + (3 - 6)^2) = 8/19
    scaled = [2 * v for v in T]
    assert pearson(T, scaled) == pytest.approx(1.0)
    assert concordance(T, scaled) == pytest.approx(8 / 19)
    assert mean_absolute_error(T, scaled) == pytest.approx(3.0)  # |t - 2t| = t, mean 3


def test_anti_correlated():
    # pred = 6 - t: same mean and variance, cov = -2 -> CCC = -4 / 4
    assert concordance(T, [5.0, 4.0, 3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    assert pearson(T, [5.0, 4.0, 3.0, 2.0, 1.0]) == pytest.approx(-1.0)


def test_general_case():
    # pred = [2, 2, 4, 4, 8]: mean 4, deviations (-2, -2, 0, 0, 4), var_p = 24/5,
    # cov = (4 + 2 + 0 + 0 + 8) / 5 = 14/5 -> CCC = 2 * 2.8 / (2 + 4.8 + 1) = 28/39, r = 2.8 / sqrt(2 * 4.8)
    pred = [2.0, 2.0, 4.0, 4.0, 8.0]
    assert concordance(T, pred) == pytest.approx(28 / 39)
    assert pearson(T, pred) == pytest.approx(2.8 / math.sqrt(9.6))
    assert mean_absolute_error(T, pred) == pytest.approx((1 + 0 + 1 + 0 + 3) / 5)


def test_undefined_cases():
    assert concordance([3.0, 3.0, 3.0], [1.0, 2.0, 3.0]) is None  # constant reference
    assert pearson([3.0, 3.0, 3.0], [1.0, 2.0, 3.0]) is None
    assert concordance([0.1] * 7, [0.1] * 7) is None  # identical floats, not a rounding-residue variance
    assert concordance([1.0], [1.0]) is None
    assert pearson([1.0], [1.0]) is None
    assert concordance([], []) is None
    assert mean_absolute_error([], []) is None


def test_pair_validation():
    with pytest.raises(ValueError, match="true has 3 values but pred has 2"):
        concordance([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="finite"):
        pearson([1, 2, 3], [1, 2, float("nan")])
    with pytest.raises(ValueError, match="one-dimensional"):
        mean_absolute_error([[1, 2]], [[1, 2]])


# --- regression_metrics ----------------------------------------------------------------------------


def test_regression_metrics_per_dimension_and_mean():
    true = columns(T, T, T)
    pred = columns([v + 1 for v in T], [5, 4, 3, 2, 1], [2 * v for v in T])
    m = regression_metrics(true, pred, AVD)
    assert m["dimensions"]["arousal"] == pytest.approx({"ccc": 0.8, "pearson": 1.0, "mae": 1.0, "n": 5})
    assert m["dimensions"]["valence"] == pytest.approx({"ccc": -1.0, "pearson": -1.0, "mae": 2.4, "n": 5})
    assert m["dimensions"]["dominance"] == pytest.approx({"ccc": 8 / 19, "pearson": 1.0, "mae": 3.0, "n": 5})
    assert m["ccc_mean"] == pytest.approx((0.8 - 1.0 + 8 / 19) / 3)
    assert m["undefined"] == []
    assert all(type(v) is float for d in m["dimensions"].values() for k, v in d.items() if k != "n")
    assert type(m["ccc_mean"]) is float
    json.dumps(m)


def test_constant_reference_is_undefined_and_left_out_of_the_mean():
    true = columns([3, 3, 3], [1, 2, 3])
    pred = columns([1, 2, 3], [2, 3, 4])
    m = regression_metrics(true, pred, ["arousal", "valence"])
    assert m["dimensions"]["arousal"]["ccc"] is None
    assert m["dimensions"]["arousal"]["pearson"] is None
    assert m["dimensions"]["arousal"]["mae"] == pytest.approx(1.0)  # (2 + 1 + 0) / 3
    # valence: var_t = var_p = 2/3, cov = 2/3, mean gap 1 -> CCC = (4/3) / (4/3 + 1) = 4/7
    assert m["dimensions"]["valence"]["ccc"] == pytest.approx(4 / 7)
    assert m["ccc_mean"] == pytest.approx(4 / 7)
    assert m["undefined"] == ["arousal: the reference scores are constant (all 3), so CCC is undefined"]


def test_no_defined_ccc_gives_none_mean():
    m = regression_metrics(columns([2.5, 2.5]), columns([1, 2]), ["arousal"])
    assert m["ccc_mean"] is None
    assert m["undefined"] == ["arousal: the reference scores are constant (all 2.5), so CCC is undefined"]
    json.dumps(m)


def test_nan_reference_rows_are_left_out_per_dimension():
    nan = float("nan")
    # arousal scored on clips 0-3 (t = 1, 2, 3, 4; pred = t + 1 on those); valence on clips 1-4.
    true = columns([1, 2, 3, 4, nan], [nan, 1, 2, 3, 4])
    pred = columns([2, 3, 4, 5, 100], [100, 4, 3, 2, 1])
    m = regression_metrics(true, pred, ["arousal", "valence"])
    # arousal: var_t = var_p = 5/4, cov = 5/4, gap 1 -> 2.5 / (2.5 + 1) = 5/7
    assert m["dimensions"]["arousal"] == pytest.approx({"ccc": 5 / 7, "pearson": 1.0, "mae": 1.0, "n": 4})
    # valence: (1, 2, 3, 4) against (4, 3, 2, 1): equal moments, cov = -5/4 -> -1; MAE (3 + 1 + 1 + 3) / 4
    assert m["dimensions"]["valence"] == pytest.approx({"ccc": -1.0, "pearson": -1.0, "mae": 2.0, "n": 4})
    assert m["ccc_mean"] == pytest.approx((5 / 7 - 1) / 2)


def test_too_few_scored_clips():
    nan = float("nan")
    m = regression_metrics(columns([1, nan, nan], T[:3]), columns([1, 2, 3], T[:3]), ["valence", "arousal"])
    assert m["dimensions"]["valence"] == {"ccc": None, "pearson": None, "mae": 0.0, "n": 1}
    assert m["undefined"] == ["valence: fewer than 2 scored clips (1), so CCC is undefined"]
    m = regression_metrics(columns([nan, nan]), columns([1, 2]), ["valence"])
    assert m["dimensions"]["valence"] == {"ccc": None, "pearson": None, "mae": None, "n": 0}
    assert m["undefined"] == ["valence: fewer than 2 scored clips (0), so CCC is undefined"]


@pytest.mark.parametrize(
    ("true", "pred", "dimensions", "message"),
    [
        (T, T, ["arousal"], "true must be two-dimensional"),
        (columns(T), T, ["arousal"], "pred must be two-dimensional"),
        (columns(T), columns(T), ["arousal", "valence"], "true has 1 columns but 2 dimensions are named"),
        (columns(T, T), columns(T), ["arousal", "valence"], "pred has 1 columns but 2 dimensions"),
        (columns(T), columns(T[:4]), ["arousal"], "true has 5 clips but pred has 4"),
        (np.empty((0, 1)), np.empty((0, 1)), ["arousal"], "no examples to score"),
        (columns(T), columns([1, 2, float("nan"), 4, 5]), ["arousal"], "pred must be finite"),
        (columns(T), columns([1, 2, float("inf"), 4, 5]), ["arousal"], "pred must be finite"),
        (columns([1, 2, float("inf"), 4, 5]), columns(T), ["arousal"], "not infinity"),
        (columns(T), columns(T), [], "at least one dimension"),
        (columns(T, T), columns(T, T), ["arousal", "arousal"], "distinct"),
    ],
)
def test_regression_metrics_validation(true, pred, dimensions, message):
    with pytest.raises(ValueError, match=message):
        regression_metrics(true, pred, dimensions)


# --- fairness ----------------------------------------------------------------------------------------


def test_fairness_per_group_and_gap():
    # arousal: F predicts exactly (CCC 1); M is shifted by +1 on t = (1, 2, 3) -> 4/7 (see above).
    # valence: M's reference is constant -> undefined, so only F has a CCC and there is no gap.
    true = columns([1, 2, 3, 1, 2, 3], [1, 2, 3, 4, 4, 4])
    pred = columns([1, 2, 3, 2, 3, 4], [1, 2, 3, 1, 2, 3])
    groups = ["F", "F", "F", "M", "M", "M"]
    f = regression_fairness(true, pred, groups, ["arousal", "valence"])
    assert f["ccc_per_group"]["arousal"] == pytest.approx({"F": 1.0, "M": 4 / 7})
    assert f["ccc_gap"]["arousal"] == pytest.approx(3 / 7)
    assert f["ccc_per_group"]["valence"] == {"F": pytest.approx(1.0), "M": None}
    assert f["ccc_gap"]["valence"] is None
    assert f["count_per_group"] == {"F": 3, "M": 3}
    assert f["n_groups"] == 2
    json.dumps(f)


def test_fairness_gap_over_three_groups_with_missing_scores():
    nan = float("nan")
    # a: (1, 2, 3) vs itself -> 1; b: anti-correlated -> -1; c: 2t on (1, 2, 3) with a NaN clip:
    # mean 4, var_p = 8/3, cov = 4/3 -> (8/3) / (2/3 + 8/3 + 4) = 4/11
    true = columns([1, 2, 3, 1, 2, 3, 1, 2, 3, nan])
    pred = columns([1, 2, 3, 3, 2, 1, 2, 4, 6, 9])
    groups = ["a", "a", "a", "b", "b", "b", "c", "c", "c", "c"]
    f = regression_fairness(true, pred, groups, ["arousal"])
    assert f["ccc_per_group"]["arousal"] == pytest.approx({"a": 1.0, "b": -1.0, "c": 4 / 11})
    assert f["ccc_gap"]["arousal"] == pytest.approx(2.0)
    assert f["count_per_group"] == {"a": 3, "b": 3, "c": 4}
    assert f["n_groups"] == 3


def test_fairness_single_group_has_no_gap():
    f = regression_fairness(columns(T), columns(T), ["F"] * 5, ["arousal"])
    assert f["ccc_per_group"] == {"arousal": {"F": pytest.approx(1.0)}}
    assert f["ccc_gap"] == {"arousal": None}
    assert f["n_groups"] == 1


def test_fairness_validation():
    with pytest.raises(ValueError, match="groups has 4 items but true has 5 clips"):
        regression_fairness(columns(T), columns(T), ["F"] * 4, ["arousal"])


def test_score_dimensions_maps_missing_gender_to_unknown():
    m = score_dimensions(columns(T), columns([v + 1 for v in T]), ["F", "F", "", None, "M"], ["arousal"])
    assert m["dimensions"]["arousal"]["ccc"] == pytest.approx(0.8)
    assert m["fairness"]["count_per_group"] == {"F": 2, "M": 1, "unknown": 2}
    # F: (1, 2) vs (2, 3): var 1/4 each, cov 1/4, gap 1 -> 0.5 / 1.5; unknown: (3, 4) vs (4, 5) likewise
    per_group = m["fairness"]["ccc_per_group"]["arousal"]
    assert per_group == {"F": pytest.approx(1 / 3), "M": None, "unknown": pytest.approx(1 / 3)}
    assert m["fairness"]["ccc_gap"]["arousal"] == pytest.approx(0.0)
    json.dumps(m)


# --- losses ------------------------------------------------------------------------------------------


def test_ccc_loss_is_one_minus_ccc_averaged_over_dimensions():
    true = columns(T, T)
    pred = columns([v + 1 for v in T], [2 * v for v in T])
    loss = ccc_loss(torch.tensor(pred), torch.tensor(true))
    assert loss.dtype == torch.float32
    assert loss.ndim == 0
    # 1 - 0.8 and 1 - 8/19 (hand values above)
    assert loss.item() == pytest.approx(((1 - 0.8) + (1 - 8 / 19)) / 2, rel=1e-6)
    expected = np.mean([1 - concordance(true[:, d], pred[:, d]) for d in range(2)])
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert dimension_loss("ccc", torch.tensor(pred), torch.tensor(true)).item() == pytest.approx(loss.item())


def test_ccc_loss_perfect_and_anti():
    t = torch.tensor(columns(T))
    assert ccc_loss(t, t).item() == pytest.approx(0.0, abs=1e-6)
    assert ccc_loss(torch.flip(t, dims=[0]), t).item() == pytest.approx(2.0, abs=1e-6)


def test_ccc_loss_gradient_step_improves_ccc():
    true = columns(T, [2, 4, 3, 5, 1])
    start = columns([2, 1, 4, 3, 6], [3, 3, 3, 4, 2])
    pred = torch.tensor(start, dtype=torch.float32, requires_grad=True)
    target = torch.tensor(true, dtype=torch.float32)
    loss = ccc_loss(pred, target)
    loss.backward()
    # dim 0: t deviations (-2, -1, 0, 1, 2), p = (2, 1, 4, 3, 6) mean 3.2, var_p = 14.8/5 = 2.96,
    # cov = (2.4 + 2.2 + 0 - 0.2 + 5.6) / 5 = 2 -> CCC = 4 / (2 + 2.96 + 0.04) = 0.8.
    # dim 1: t deviations (-1, 1, 0, 2, -2), var_t = 2; p = (3, 3, 3, 4, 2) mean 3, var_p = 2/5,
    # cov = (2 + 2) / 5 = 4/5 -> CCC = 1.6 / (2 + 0.4 + 0) = 2/3
    assert concordance(true[:, 0], start[:, 0]) == pytest.approx(0.8)
    assert concordance(true[:, 1], start[:, 1]) == pytest.approx(2 / 3)
    assert loss.item() == pytest.approx(1 - (0.8 + 2 / 3) / 2, rel=1e-6)
    stepped = (pred - 0.1 * pred.grad).detach()
    for d in range(2):
        assert concordance(true[:, d], stepped[:, d].double().numpy()) > concordance(true[:, d], start[:, d])
    assert ccc_loss(stepped, target).item() < loss.item()


def test_ccc_loss_nan_targets_get_no_gradient():
    nan = float("nan")
    true = columns([1, 2, nan, 3, 4], [nan, 1, 2, 3, nan])
    start = columns([2, 2, 5, 5, 3], [7, 1, 3, 2, -4])
    pred = torch.tensor(start, dtype=torch.float32, requires_grad=True)
    loss = ccc_loss(pred, torch.tensor(true, dtype=torch.float32))
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(pred.grad).all()
    scored = ~np.isnan(true)
    assert (pred.grad.numpy()[~scored] == 0).all()
    assert (pred.grad.numpy()[scored] != 0).any()
    expected = np.mean([1 - concordance(true[scored[:, d], d], start[scored[:, d], d]) for d in range(2)])
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_ccc_loss_skips_dimensions_with_fewer_than_two_scored_rows():
    nan = float("nan")
    true = torch.tensor(columns([nan, 1, nan, nan, nan], T))
    pred = torch.tensor(columns([9, 9, 9, 9, 9], [v + 1 for v in T]))
    assert ccc_loss(pred, true).item() == pytest.approx(1 - 0.8, rel=1e-6)  # the second dimension alone


@pytest.mark.parametrize("loss_fn", [ccc_loss, mse_loss])
def test_fully_nan_target_gives_zero_loss_and_zero_gradient(loss_fn):
    pred = torch.tensor(columns(T, T), dtype=torch.float32, requires_grad=True)
    loss = loss_fn(pred, torch.full((5, 2), float("nan")))
    assert loss.item() == 0.0
    loss.backward()
    assert (pred.grad == 0).all()


def test_ccc_loss_constant_batch_is_finite():
    pred = torch.full((4, 1), 2.0, requires_grad=True)
    loss = ccc_loss(pred, torch.full((4, 1), 3.0))
    loss.backward()
    assert loss.item() == pytest.approx(1.0)  # cov = 0
    assert torch.isfinite(pred.grad).all()


def test_losses_compute_in_float32():
    pred = torch.tensor(columns([v + 1 for v in T]), dtype=torch.bfloat16)
    target = torch.tensor(columns(T), dtype=torch.float64)
    assert ccc_loss(pred, target).dtype == torch.float32
    assert mse_loss(pred, target).dtype == torch.float32


def test_mse_loss_over_scored_entries():
    nan = float("nan")
    pred = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    target = torch.tensor([[1.0, nan], [5.0, 1.0]])
    loss = mse_loss(pred, target)
    # squared errors 0, (3 - 5)^2 = 4, (4 - 1)^2 = 9 over 3 scored entries
    assert loss.item() == pytest.approx(13 / 3)
    loss.backward()
    # d/dp (p - t)^2 / 3 = 2 (p - t) / 3; the NaN entry gets none
    assert pred.grad.flatten().tolist() == pytest.approx([0.0, 0.0, -4 / 3, 2.0])
    assert dimension_loss("mse", pred, target).item() == pytest.approx(13 / 3)


def test_loss_validation():
    assert set(DIMENSION_LOSSES) == {"ccc", "mse"}
    with pytest.raises(ValueError, match="unknown dimension loss 'huber'; known: ccc, mse"):
        dimension_loss("huber", torch.zeros(2, 1), torch.zeros(2, 1))
    with pytest.raises(ValueError, match="must be \\[batch, dimensions\\]"):
        ccc_loss(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="pred has shape \\(3, 1\\) but target has \\(3, 2\\)"):
        mse_loss(torch.zeros(3, 1), torch.zeros(3, 2))
