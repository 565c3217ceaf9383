"""Offline metrics against hand-computed values and the properties they must have."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ranker.schema import Schema
from training.metrics import (
    auc,
    auc_confidence_interval,
    calibration,
    delong_test,
    evaluate,
    expected_auc,
    expected_calibration_error,
    gauc,
    logloss,
    mae,
    output_labels,
    output_rows,
    rmse,
    scored_rows,
)

LABELS = [0, 0, 1, 1]
SCORES = [0.1, 0.4, 0.35, 0.8]  # 3 of the 4 (positive, negative) pairs are ordered: AUC 0.75


def test_auc_by_hand_with_ties_and_weights() -> None:
    assert auc(LABELS, SCORES) == pytest.approx(0.75)
    # pairs: (.5,.5) tie = 1/2, (.5,.2) = 1, (.9,.5) = 1, (.9,.2) = 1 -> 3.5 / 4
    assert auc([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]) == pytest.approx(0.875)
    # the negative at .4 weighs 2: ordered weight 1 + 0 + 1 + 2 = 4 of 2 * 3 = 6
    assert auc(LABELS, SCORES, sample_weight=[1, 2, 1, 1]) == pytest.approx(4 / 6)
    duplicated = auc([0, 0, 0, 1, 1], [0.1, 0.4, 0.4, 0.35, 0.8])
    assert auc(LABELS, SCORES, sample_weight=[1, 2, 1, 1]) == pytest.approx(duplicated)


def test_auc_properties() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 500)
    scores = rng.random(500)
    assert auc(labels, labels * 0.5 + 0.2) == 1.0  # perfect
    assert auc(labels, -labels) == 0.0  # reversed
    assert auc(labels, np.full(500, 0.3)) == 0.5  # all tied
    assert auc(labels, scores) == pytest.approx(1.0 - auc(labels, -scores))
    assert auc(labels, scores) == pytest.approx(auc(labels, np.exp(scores)))  # ranks only
    assert math.isnan(auc([1, 1, 1], [0.1, 0.2, 0.3]))  # one class
    with pytest.raises(ValueError, match=r"got 2\.0"):
        auc([0, 2], [0.1, 0.2])


def test_auc_matches_the_pairwise_definition_on_random_ties() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 300)
    scores = rng.integers(0, 20, 300) / 20.0  # many ties
    pos, neg = scores[labels == 1], scores[labels == 0]
    pairs = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    assert auc(labels, scores) == pytest.approx(pairs.mean())


def test_expected_auc_matches_the_pairwise_definition_and_the_mean_over_draws() -> None:
    rng = np.random.default_rng(2)
    p = rng.random(200) * 0.3
    scores = np.round(p + rng.normal(0.0, 0.05, 200), 2)  # noisy, with ties
    weight = p[:, None] * (1.0 - p[None, :])
    np.fill_diagonal(weight, 0.0)
    ordered = (scores[:, None] > scores[None, :]) + 0.5 * (scores[:, None] == scores[None, :])
    assert expected_auc(p, scores) == pytest.approx((weight * ordered).sum() / weight.sum())
    draws = [auc(rng.random(200) < p, scores) for _ in range(4000)]
    assert expected_auc(p, scores) == pytest.approx(np.mean(draws), abs=0.003)
    # one positive certain, one negative certain: the AUC of that single pair
    assert expected_auc([1.0, 0.0], [0.2, 0.9]) == 0.0
    assert expected_auc([1.0, 0.0, 0.5], [0.9, 0.2, 0.5]) == pytest.approx((1 + 0.5 + 0.5) / 2)
    assert math.isnan(expected_auc([0.0, 0.0], [0.1, 0.2]))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        expected_auc([0.5, 1.5], [0.1, 0.2])


def test_gauc_by_hand_and_with_one_group() -> None:
    labels = [1, 0, 0, 1, 0, 1, 1]
    scores = [0.9, 0.1, 0.8, 0.2, 0.5, 0.3, 0.4]
    groups = ["a", "a", "b", "b", "b", "c", "c"]  # a: AUC 1 (2 rows), b: AUC 0 (3), c: one class
    assert gauc(labels, scores, groups) == pytest.approx((2 * 1.0 + 3 * 0.0) / 5)
    rng = np.random.default_rng(2)
    labels, scores = rng.integers(0, 2, 200), rng.integers(0, 10, 200)
    assert gauc(labels, scores, np.zeros(200)) == pytest.approx(auc(labels, scores))
    assert math.isnan(gauc([1, 0], [0.5, 0.5], ["a", "b"]))  # every group has one class


def test_gauc_matches_a_loop_over_users() -> None:
    rng = np.random.default_rng(3)
    labels, scores = rng.integers(0, 2, 400), rng.integers(0, 8, 400) / 8.0
    users = rng.integers(0, 30, 400)
    total = weight = 0.0
    for user in np.unique(users):
        rows = users == user
        if 0 < labels[rows].sum() < rows.sum():
            total += auc(labels[rows], scores[rows]) * rows.sum()
            weight += rows.sum()
    assert gauc(labels, scores, users) == pytest.approx(total / weight)


def test_logloss_calibration_and_ece_by_hand() -> None:
    assert logloss([1, 0], [0.8, 0.4]) == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)
    assert logloss([1], [0.0]) == pytest.approx(-math.log(1e-7))  # clipped, finite
    assert calibration([1, 0, 0, 0], [0.5, 0.5, 0.25, 0.25]) == pytest.approx(0.375 / 0.25)
    assert math.isnan(calibration([0, 0], [0.1, 0.2]))
    # 2 equal-frequency bins: {.1,.2} vs labels {0,0}: gap .15; {.6,.9} vs {1,1}: gap .25
    assert expected_calibration_error([0, 0, 1, 1], [0.1, 0.2, 0.6, 0.9], bins=2) == (
        pytest.approx((2 * 0.15 + 2 * 0.25) / 4)
    )
    labels = np.tile([0, 1], 50)
    assert expected_calibration_error(labels, np.full(100, 0.5)) == pytest.approx(0.0)
    assert expected_calibration_error(labels, np.full(100, 0.7)) == pytest.approx(0.2)


def test_regression_errors_by_hand() -> None:
    assert rmse([1.0, 2.0], [2.0, 4.0]) == pytest.approx(math.sqrt((1 + 4) / 2))
    assert mae([1.0, 2.0], [2.0, 4.0]) == pytest.approx(1.5)


def test_delong_interval_by_hand() -> None:
    # per positive: share of negatives below = [1, .5]; per negative: share of positives above
    # = [.5, 1]; var = var([1,.5])/2 + var([.5,1])/2 = .125
    value, low, high = auc_confidence_interval([1, 1, 0, 0], [0.9, 0.6, 0.7, 0.1])
    assert value == pytest.approx(0.75)
    assert low == pytest.approx(0.75 - 1.959964 * math.sqrt(0.125), abs=1e-5) and high == 1.0


def _pairwise_delong(labels: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Variance of AUC(a) - AUC(b) from DeLong's structural components, by brute force."""
    components = []
    for scores in (a, b):
        pos, neg = scores[labels == 1], scores[labels == 0]
        psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
        components.append((psi.mean(axis=1), psi.mean(axis=0)))
    m, n = len(components[0][0]), len(components[0][1])
    s10 = np.cov(np.vstack([components[0][0], components[1][0]]))
    s01 = np.cov(np.vstack([components[0][1], components[1][1]]))
    cov = s10 / m + s01 / n
    return float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])


def test_delong_test_matches_the_definition_and_its_properties() -> None:
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, 300)
    a = labels + rng.normal(0, 1.0, 300)
    b = labels + rng.normal(0, 1.5, 300)
    auc_a, auc_b, z, p = delong_test(labels, a, b)
    assert auc_a == pytest.approx(auc(labels, a)) and auc_b == pytest.approx(auc(labels, b))
    assert z == pytest.approx((auc_a - auc_b) / math.sqrt(_pairwise_delong(labels, a, b)))
    assert p == pytest.approx(math.erfc(abs(z) / math.sqrt(2)))
    assert delong_test(labels, b, a)[2] == pytest.approx(-z)
    assert delong_test(labels, a, a) == (auc_a, auc_a, 0.0, 1.0)  # identical: p = 1
    strong, weak = labels + rng.normal(0, 0.3, 300), labels + rng.normal(0, 3.0, 300)
    assert delong_test(labels, strong, weak)[3] < 0.001


SCHEMA = Schema.from_dict(
    {
        "features": [{"name": "device", "type": "categorical", "entity": "context",
                      "vocabulary": ["ios"]}],
        "tasks": [
            {"name": "ctr", "label": "click"},
            {"name": "cvr", "label": "conversion", "condition": "click"},
            {"name": "dwell", "label": "seconds", "type": "regression"},
        ],
        "products": [{"name": "ctcvr", "of": ["ctr", "cvr"]}],
    }
)  # fmt: skip


def test_evaluate_masks_cvr_to_clicks_and_scores_ctcvr_on_all_rows() -> None:
    labels = {
        "click": np.array([1, 1, 1, 0, 0, 0]),
        "conversion": np.array([1, 0, 0, 0, 0, 0]),
        "seconds": np.array([10.0, 20.0, 0.0, 0.0, 0.0, 0.0]),
    }
    predictions = {
        "ctr": np.array([[0.9], [0.8], [0.3], [0.4], [0.2], [0.1]]),  # [n, 1] model outputs
        "cvr": np.array([0.5, 0.1, 0.2, 0.9, 0.9, 0.9]),  # high on unclicked rows: ignored
        "dwell": np.array([12.0, 20.0, 0.0, 0.0, 0.0, 0.0]),
    }
    users = np.array(["u", "u", "v", "v", "v", "v"])
    result = evaluate(SCHEMA, predictions, labels, users)
    assert list(result) == ["ctr", "cvr", "dwell", "ctcvr"]
    assert result["ctr"]["auc"] == pytest.approx(8 / 9)  # positive .3 is below negative .4
    assert result["ctr"]["count"] == 6 and math.isnan(result["ctr"]["gauc"]) is False
    assert result["ctr"]["gauc"] == pytest.approx(2 / 3)  # user u has one class: only v counts
    assert result["cvr"] == pytest.approx(
        {
            "auc": 1.0,
            "gauc": 1.0,
            "count": 3.0,
            "logloss": -(math.log(0.5) + math.log(0.9) + math.log(0.8)) / 3,
            "calibration": (0.8 / 3) / (1 / 3),
            "ece": expected_calibration_error([1, 0, 0], [0.5, 0.1, 0.2]),
        }
    )
    ctcvr = np.array([0.45, 0.08, 0.06, 0.36, 0.18, 0.09])  # ctr * cvr, computed when absent
    assert result["ctcvr"]["auc"] == pytest.approx(auc([1, 0, 0, 0, 0, 0], ctcvr))
    assert result["ctcvr"]["count"] == 6
    assert result["dwell"] == pytest.approx({"rmse": math.sqrt(4 / 6), "mae": 2 / 6, "count": 6})
    assert set(result["dwell"]) == {"rmse", "mae", "count"}


def test_outputs_are_scored_on_their_condition_rows_against_their_labels() -> None:
    labels = {
        "click": np.array([1, 1, 0, 0]),
        "conversion": np.array([1, 0, 0, 0]),
        "seconds": np.array([[3.0], [0.0], [1.0], [0.0]]),  # [n, 1] columns are flattened
    }
    rows = output_rows(SCHEMA, labels)
    assert list(rows) == ["ctr", "cvr", "dwell", "ctcvr"]
    assert rows["cvr"].tolist() == [True, True, False, False]  # conditioned: clicked rows only
    for output in ("ctr", "dwell", "ctcvr"):
        assert rows[output].tolist() == [True] * 4, output
    truth = output_labels(SCHEMA, labels)
    assert list(truth) == ["ctr", "cvr", "dwell", "ctcvr"]
    assert truth["ctcvr"].tolist() == [1.0, 0.0, 0.0, 0.0]  # click * conversion
    assert truth["dwell"].tolist() == [3.0, 0.0, 1.0, 0.0]
    # a condition label is a mask only where it is exactly 1, so the test can fail
    assert scored_rows(3, [1.0, 0.5, 0.0]).tolist() == [True, False, False]
    assert scored_rows(2).tolist() == [True, True]
