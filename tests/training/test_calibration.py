"""Calibration fitted on val and exported inside the SavedModel: hand-computed blocks, the TF
function against numpy, known parameters recovered, and an export whose served scores are the
calibrator of metadata.json applied to its raw scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import ranker  # noqa: F401  (Keras 2 before TensorFlow loads)
from ranker.contract import ExportCalibration, TaskCalibration
from ranker.errors import ConfigError
from ranker.keras_compat import tf
from ranker.schema import Schema
from training import calibration
from training.calibration import (
    fit_isotonic,
    fit_platt,
    fit_temperature,
    piecewise_linear,
    pool_adjacent_violators,
)
from training.cli import main
from training.config import TrainConfig
from training.data import ReadOptions, make_dataset
from training.evaluation import evaluate_scores, saved_model_scorer
from training.metrics import auc, expected_calibration_error
from training.negative_sampling import correct_negative_sampling
from training.trainer import train

CLICK_LOG = {
    "features": [{"name": "x", "type": "numeric", "entity": "context"}],
    "tasks": [
        {"name": "ctr", "label": "click"},
        {"name": "cvr", "label": "conversion", "condition": "click"},
    ],
    "products": [{"name": "ctcvr", "of": ["ctr", "cvr"]}],
}


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


# ---- fitting -------------------------------------------------------------------------------------


def test_pool_adjacent_violators_gives_the_hand_computed_blocks() -> None:
    # 0.2 (a positive) then 0.3 (a negative) violate the order: pooled to rate 1/2; 0.4 and 0.5
    # (both positives) have equal rates: pooled too, so the rates strictly increase
    x, y, n = pool_adjacent_violators([0.3, 0.1, 0.5, 0.2, 0.4], [0, 0, 1, 1, 1])
    np.testing.assert_allclose(x, [0.1, 0.25, 0.45])
    np.testing.assert_allclose(y, [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(n, [1, 2, 2])
    # tied scores start as one block: 0.2 twice (one positive) is one knot of rate 1/2
    x, y, n = pool_adjacent_violators([0.2, 0.2, 0.1, 0.9], [1, 0, 0, 1])
    np.testing.assert_allclose(x, [0.1, 0.2, 0.9])
    np.testing.assert_allclose(y, [0.0, 0.5, 1.0])
    # a long violation pools back over several blocks: rates 1, 0, 0 -> one block of rate 1/3
    x, y, n = pool_adjacent_violators([0.1, 0.2, 0.3, 0.4], [1, 0, 0, 1])
    np.testing.assert_allclose(x, [0.2, 0.4])
    np.testing.assert_allclose(y, [1 / 3, 1.0])
    np.testing.assert_array_equal(n, [3, 1])


def test_isotonic_knots_are_float32_values_and_merge_where_float32_cannot_tell_them_apart() -> None:
    fitted = fit_isotonic([0.5, 0.5 + 1e-9, 0.5 + 1e-9, 0.9], [0, 0, 1, 1])
    # PAV: (0.5, rate 0, 1 row), (0.5 + 1e-9, 1/2, 2 rows), (0.9, 1, 1 row); the first two are
    # the same float32: one knot at 0.5 of rate (0 + 1) / 3; anchored at (0, 0) below it (none
    # above: the top block's rate is already 1)
    assert fitted.knots == 3 and fitted.x is not None and fitted.y is not None
    assert fitted.x == [0.0, 0.5, float(np.float32(0.9))]
    assert fitted.y == [0.0, float(np.float32(1 / 3)), 1.0]
    assert all(float(np.float32(v)) == v for v in fitted.x + fitted.y)


def test_isotonic_prior_rows_pull_small_blocks_toward_their_scores() -> None:
    # blocks (0.15, rate 0, 2 rows) and (0.35, rate 1, 2 rows); 2 pseudo-rows at each block's
    # mean score: (0 + 2 * 0.15) / 4 = 0.075 and (2 + 2 * 0.35) / 4 = 0.675
    fitted = fit_isotonic([0.1, 0.2, 0.3, 0.4], [0, 0, 1, 1], prior_rows=2)
    assert fitted.x == [0.0, float(np.float32(0.15)), float(np.float32(0.35)), 1.0]
    assert fitted.y == [0.0, float(np.float32(0.075)), float(np.float32(0.675)), 1.0]
    # a big block of rate 1/2 at 0.1 and 5 rows of rate 3/5 at 0.2: smoothed, (500 + 1) / 1010
    # above (3 + 2) / 15, so they pool: x (0.1 * 1010 + 0.2 * 15) / 1025, rate 506 / 1025; 100
    # rows of rate 0.9 at 0.9 stay a block of (90 + 9) / 110 = 0.9
    scores = [0.1] * 1000 + [0.2] * 5 + [0.9] * 100
    labels = [0, 1] * 500 + [1, 1, 1, 0, 0] + [1] * 90 + [0] * 10
    plain = fit_isotonic(scores, labels)
    assert plain.y == [0.0, 0.5, float(np.float32(0.6)), float(np.float32(0.9)), 1.0]
    pooled = fit_isotonic(scores, labels, prior_rows=10)
    assert pooled.x == [0.0, float(np.float32(104 / 1025)), float(np.float32(0.9)), 1.0]
    assert pooled.y == [0.0, float(np.float32(506 / 1025)), float(np.float32(0.9)), 1.0]


def test_isotonic_keeps_the_order_of_scores_beyond_its_outer_blocks() -> None:
    # blocks at 0.2 (rate 0.1) and 0.4 (rate 0.3); scores above 0.4 and below 0.2 rise on the
    # segments to the anchors (1, 1) and (0, 0) instead of tying at the outer rates
    fitted = fit_isotonic([0.2] * 10 + [0.4] * 10, [1] + [0] * 9 + [1] * 3 + [0] * 7)
    mapped = np.interp([0.05, 0.1, 0.5, 0.7], fitted.x or [], fitted.y or [])
    np.testing.assert_allclose(mapped, [0.025, 0.05, 0.3 + 0.7 / 6, 0.3 + 2.1 / 6], rtol=1e-6)


def test_the_tf_piecewise_linear_function_is_numpy_interp() -> None:
    # float32 values, as `fit_isotonic` gives, two of them close (a steep segment)
    x = [float(v) for v in np.float32([0.01, 0.05, 0.0500001, 0.2, 0.6])]
    y = [float(v) for v in np.float32([0.0, 0.02, 0.03, 0.3, 0.9])]
    rng = np.random.default_rng(0)
    p = np.concatenate([rng.random(1000), x, [0.0, 1.0, 0.005, 0.7]]).astype(np.float32)
    got = piecewise_linear(tf.constant(p), x, y).numpy()
    np.testing.assert_allclose(got, np.interp(p.astype(np.float64), x, y), atol=1e-6)
    assert got[-4] == 0.0 and got[-1] == pytest.approx(0.9)  # flat beyond the ends
    assert piecewise_linear(tf.constant(p), [0.3], [0.1]).numpy().tolist() == [
        pytest.approx(0.1)
    ] * len(p)
    # so the test can fail: a shifted knot is another function
    assert not np.allclose(piecewise_linear(tf.constant(p), x, [0.0, 0.02, 0.03, 0.3, 0.8]), got)


def test_platt_and_temperature_recover_the_sigmoid_the_labels_were_drawn_from() -> None:
    rng = np.random.default_rng(1)
    z = rng.normal(0.0, 1.5, 200_000)
    scores = _sigmoid(z)
    platt = fit_platt(scores, rng.random(len(z)) < _sigmoid(0.6 * z - 1.2))
    assert platt.a == pytest.approx(0.6, abs=0.02) and platt.b == pytest.approx(-1.2, abs=0.03)
    temperature = fit_temperature(scores, rng.random(len(z)) < _sigmoid(z / 2.0))
    assert temperature.temperature == pytest.approx(2.0, abs=0.05)
    # the TF functions the export applies are those sigmoids
    p = tf.constant(scores[:100], tf.float32)
    np.testing.assert_allclose(
        calibration.APPLY["platt"](platt, p), _sigmoid(platt.a * z[:100] + platt.b), atol=1e-5
    )
    np.testing.assert_allclose(
        calibration.APPLY["temperature"](temperature, p),
        _sigmoid(z[:100] / temperature.temperature),
        atol=1e-5,
    )


def test_negative_sampling_correction_by_hand() -> None:
    q = np.array([0.5, 0.2, 0.0, 1.0])
    # R = 0.1: 0.5 / (0.5 + 0.5 / 0.1) = 1/11, 0.2 / (0.2 + 0.8 / 0.1) = 1/41
    # R = 0.25: 0.2 / (0.2 + 0.8 / 0.25) = 1/17
    np.testing.assert_allclose(correct_negative_sampling(q[:2], 0.1), [1 / 11, 1 / 41])
    np.testing.assert_allclose(correct_negative_sampling(q, 0.25)[1:], [1 / 17, 0.0, 1.0])
    np.testing.assert_allclose(correct_negative_sampling(q, 1.0), q)
    # it inverts sampling: keeping negatives with rate R turns p into p / (p + (1 - p) R)
    p = np.linspace(0.01, 0.99, 50)
    np.testing.assert_allclose(correct_negative_sampling(p / (p + (1 - p) * 0.1), 0.1), p)


def test_fit_uses_the_conditioned_rows_skips_thin_tasks_and_regression() -> None:
    schema = Schema.from_dict(CLICK_LOG)
    rng = np.random.default_rng(2)
    n = 4000
    p_click = rng.uniform(0.05, 0.5, n)
    click = (rng.random(n) < p_click).astype(np.float64)
    conversion = click * (rng.random(n) < 0.3)
    scores = {"ctr": p_click * 0.5, "cvr": rng.random(n), "ctcvr": p_click * 0.1}
    labels = {"click": click, "conversion": conversion}
    config = TrainConfig.model_validate({"negative_sampling_rate": 0.5})
    fitted = calibration.fit(schema, config, scores, labels)
    ctr, cvr = fitted.tasks["ctr"], fitted.tasks["cvr"]
    assert ctr.method == "isotonic" and ctr.corrected and ctr.rows == n
    assert ctr.positives == int(click.sum()) and ctr.knots == len(ctr.x or [])
    assert cvr.method == "isotonic" and not cvr.corrected
    assert cvr.rows == int(click.sum()) and cvr.positives == int(conversion.sum())
    assert fitted.tasks["ctcvr"].method == "product" and fitted.tasks["ctcvr"].of == ["ctr", "cvr"]
    # fewer positives than min_positives: left as it is, and said why
    thin = TrainConfig.model_validate({"calibration": {"min_positives": int(conversion.sum()) + 1}})
    cvr = calibration.fit(schema, thin, scores, labels).tasks["cvr"]
    assert cvr.method == "none" and "min_positives" in (cvr.reason or "")
    # a regression-only schema has nothing to calibrate
    regression = Schema.from_dict(
        {
            "features": CLICK_LOG["features"],
            "tasks": [{"name": "y", "label": "y", "type": "regression"}],
        }
    )
    empty = calibration.fit(regression, TrainConfig(), {"y": rng.random(n)}, {"y": rng.random(n)})
    assert empty.tasks == {}


def test_export_outputs_correct_calibrate_and_multiply() -> None:
    schema = Schema.from_dict(CLICK_LOG)
    fitted = ExportCalibration(
        method="isotonic",
        negative_sampling_rate=0.25,
        tasks={
            "ctr": TaskCalibration(method="isotonic", corrected=True, x=[0.0, 1.0], y=[0.1, 0.5]),
            "cvr": TaskCalibration(method="platt", a=1.0, b=np.log(2.0)),
            "ctcvr": TaskCalibration(method="product", of=["ctr", "cvr"]),
        },
    )
    raw = {"ctr": tf.constant([0.2]), "cvr": tf.constant([0.5]), "ctcvr": tf.constant([0.7])}
    out = {
        k: float(v.numpy()[0]) for k, v in calibration.export_outputs(fitted, schema, raw).items()
    }
    # ctr: corrected 1/17, then 0.1 + 0.4 / 17; cvr: sigmoid(logit(0.5) + log 2) = 2/3
    assert out["ctr"] == pytest.approx(0.1 + 0.4 / 17, abs=1e-7)
    assert out["cvr"] == pytest.approx(2 / 3, abs=1e-7)
    assert out["ctcvr"] == pytest.approx(out["ctr"] * out["cvr"], abs=1e-7)
    assert out["raw_ctr"] == pytest.approx(0.2) and out["raw_ctcvr"] == pytest.approx(0.7)


def test_raw_metrics_appear_only_with_raw_scores() -> None:
    schema = Schema.from_dict(CLICK_LOG)
    labels = {"click": np.array([0, 1, 1, 0, 1.0]), "conversion": np.array([0, 1, 0, 0, 1.0])}
    served = {"ctr": np.array([0.1, 0.9, 0.6, 0.3, 0.5]), "cvr": np.full(5, 0.5)}
    served["ctcvr"] = served["ctr"] * served["cvr"]
    assert "raw" not in evaluate_scores(schema, served, labels)["ctr"]
    raw = {f"raw_{k}": v**2 for k, v in served.items()}
    results = evaluate_scores(schema, {**served, **raw}, labels)
    assert set(results["ctr"]["raw"]) == {"ece", "calibration", "auc", "logloss"}
    click = labels["click"]
    assert results["ctr"]["raw"]["ece"] == pytest.approx(
        expected_calibration_error(click, raw["raw_ctr"])
    )
    assert results["ctr"]["ece"] == pytest.approx(expected_calibration_error(click, served["ctr"]))
    clicked = click == 1
    assert results["cvr"]["raw"]["auc"] == pytest.approx(
        auc(labels["conversion"][clicked], raw["raw_cvr"][clicked])
    )


# ---- configuration -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("calibration: {method: spline}", "calibration.method: Input should be 'isotonic'"),
        ("calibration: {bins: 3}", "calibration.bins: unknown key"),
        ("negative_sampling_rate: 1.5", "negative_sampling_rate: must be in (0, 1], got 1.5"),
        ("negative_sampling_rate: 0", "negative_sampling_rate: must be in (0, 1], got 0"),
    ],
)
def test_bad_calibration_config_names_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError) as caught:
        TrainConfig.load(path)
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value)
    if "spline" in text:
        assert "got 'spline'" in str(caught.value)


@pytest.mark.parametrize("rate", ["0", "1.5", "-0.1"])
def test_a_bad_negative_sampling_rate_flag_is_a_one_line_error(
    synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, rate: str
) -> None:
    args = ["train", "--data", str(synth_dir), "--model", "mmoe", "--out", str(tmp_path)]
    assert main([*args, "--negative-sampling-rate", rate]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"--negative-sampling-rate must be in (0, 1], got {float(rate)}" in err, err


def test_a_negative_sampling_rate_needs_a_task_without_condition(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    Schema.from_dict(
        {
            "features": CLICK_LOG["features"],
            "tasks": [{"name": "y", "label": "y", "type": "regression"}],
        }
    ).dump(data / "schema.yaml")
    config = TrainConfig.model_validate({"negative_sampling_rate": 0.1})
    with pytest.raises(
        ConfigError, match=r"negative_sampling_rate: 0\.1 needs a served binary task"
    ):
        train(data, "mmoe", tmp_path / "models", config, verbose=False)


# ---- the export ------------------------------------------------------------------------------


def test_the_export_serves_its_metadata_calibrator_applied_to_its_raw_scores(
    synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = TrainConfig.model_validate(
        {
            "batch_size": 256,  # enough steps for the scores to order the clicks (AUC > 0.5)
            "epochs": 2,
            "hparams": {"num_experts": 2, "expert_units": [16], "tower_units": [8]},
            "calibration": {"min_positives": 5},  # the small val has ~15 conversions
            "negative_sampling_rate": 0.5,
        }
    )
    result = train(synth_dir, "mmoe", tmp_path / "models", config, verbose=False)
    assert "calibration of cvr" not in capsys.readouterr().err  # quiet: nothing left uncalibrated
    metadata = json.loads((result.path / "metadata.json").read_text())
    fitted = metadata["calibration"]
    assert fitted["negative_sampling_rate"] == 0.5 and fitted["method"] == "isotonic"
    ctr, cvr = fitted["tasks"]["ctr"], fitted["tasks"]["cvr"]
    assert ctr["corrected"] and not cvr["corrected"] and ctr["knots"] > 1 and cvr["knots"] > 1
    assert fitted["tasks"]["ctcvr"]["method"] == "product"

    schema = Schema.load(synth_dir / "schema.yaml")
    features, _ = next(
        iter(make_dataset(synth_dir / "test.parquet", schema, ReadOptions(batch_size=2000)))
    )
    served = tf.saved_model.load(str(result.path)).signatures["serving_default"](**features)
    out = {name: value.numpy().astype(np.float64) for name, value in served.items()}
    assert set(out) == {"ctr", "cvr", "ctcvr", "raw_ctr", "raw_cvr", "raw_ctcvr"}
    # the calibrator metadata.json describes, rebuilt in numpy
    q = out["raw_ctr"]
    corrected = q / (q + (1.0 - q) / 0.5)
    np.testing.assert_allclose(out["ctr"], np.interp(corrected, ctr["x"], ctr["y"]), atol=1e-6)
    np.testing.assert_allclose(out["cvr"], np.interp(out["raw_cvr"], cvr["x"], cvr["y"]), atol=1e-6)
    np.testing.assert_allclose(out["ctcvr"], out["ctr"] * out["cvr"], atol=1e-6)
    # so the test can fail: calibration changed the scores
    assert np.abs(out["ctr"] - q).max() > 1e-3 and np.abs(out["cvr"] - out["raw_cvr"]).max() > 1e-3

    # the test figures are the exported scores', with the raw ones beside them
    assert result.test["ctr"]["ece"] == pytest.approx(ctr["test"]["after"]["ece"])
    assert result.test["ctr"]["raw"]["ece"] == pytest.approx(ctr["test"]["before"]["ece"])
    assert metadata["test_metrics"]["cvr"]["auc"] == pytest.approx(cvr["test"]["after"]["auc"])
    assert set(saved_model_scorer(result.path)(features)) == {"ctr", "cvr", "ctcvr"}


def test_scores_the_rate_falls_with_are_left_as_they_are() -> None:
    rng = np.random.default_rng(3)
    z = rng.normal(0.0, 1.0, 20_000)
    fitted = fit_temperature(_sigmoid(z), rng.random(len(z)) < _sigmoid(-z))
    assert fitted.method == "none" and "does not rise" in (fitted.reason or "")
    # nor a Platt slope or an isotonic fit: a reversed or constant map would erase the ranking
    assert fit_platt(_sigmoid(z), rng.random(len(z)) < _sigmoid(-z)).method == "none"
    constant = fit_isotonic([0.1, 0.2, 0.3, 0.4], [1, 0, 1, 0])  # PAV: one block of rate 1/2
    assert constant.method == "none" and "constant" in (constant.reason or "")
