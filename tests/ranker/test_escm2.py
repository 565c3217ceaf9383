"""ESCM2: the IPS and DR counterfactual risks by hand, the propensity clip and stop-gradient,
rows without a click, training with each variant, configs."""

from __future__ import annotations

import numpy as np
import pytest

from ranker import registry
from ranker.architectures.escm2 import ESCM2
from ranker.errors import ConfigError
from ranker.keras_compat import keras, tf
from ranker.layers.mlp import MLP
from ranker.layers.tower import Tower
from ranker.model import RankingModel
from ranker.schema import Schema
from tests.ranker.conftest import make_data

# four rows: row 1 has no click, row 2's pCTR is under the clip
CLICK = np.array([1.0, 0.0, 1.0, 1.0], np.float32)
CONVERSION = np.array([1.0, 1.0, 0.0, 0.0], np.float32)
PCTR = np.array([0.5, 0.2, 0.05, 0.8], np.float32)
PCVR = np.array([0.7, 0.4, 0.3, 0.1], np.float32)
RAW_IMPUTATION = np.array([0.2, -1.0, 0.5, 0.0], np.float32)  # the towers' input (kernel 1)
# per-row BCE(conversion, pCVR)
ERROR = -np.log(np.array([0.7, 0.6, 0.7, 0.9]))


def _backbone(variant: str, weight: float = 1.0, clip: float = 0.1) -> ESCM2:
    """ESCM2 on a shared bottom; for `dr`, imputation towers whose output is softplus(input)."""
    towers = [
        Tower(
            hidden=MLP(units=[]),
            task_type="regression",
            kernel_initializer="ones",
            bias_initializer="zeros",
            name=f"imputation_{k}",
        )
        for k in range(2)
        if variant == "dr"
    ]
    base = registry.get("shared_bottom").from_config_dict({"bottom_units": [2]}, 2)
    return ESCM2(
        2,
        base=base,
        variant=variant,
        counterfactual_weight=weight,
        propensity_clip=clip,
        imputation_towers=towers,
    )


def _terms(
    backbone: ESCM2,
    schema: Schema,
    click: np.ndarray = CLICK,
    conversion: np.ndarray = CONVERSION,
    pctr: np.ndarray = PCTR,
    pcvr: np.ndarray = PCVR,
) -> dict[str, float]:
    scores = {"ctr": tf.constant(pctr), "cvr": tf.constant(pcvr)}
    labels = {"click": tf.constant(click), "conversion": tf.constant(conversion)}
    representation = tf.constant(RAW_IMPUTATION[:, np.newaxis])
    terms = backbone.output_losses(
        schema, scores, labels, [representation, representation], training=False
    )
    return {name: float(value) for name, value in terms.items()}


def test_ips_risk_is_the_propensity_weighted_error_of_clicked_rows(schema: Schema) -> None:
    terms = _terms(_backbone("ips", weight=0.5, clip=0.1), schema)
    assert set(terms) == {"cvr_counterfactual_risk"}
    # row 1 is not clicked; row 2's propensity 0.05 is clipped to 0.1
    expected = 0.5 * (ERROR[0] / 0.5 + ERROR[2] / 0.1 + ERROR[3] / 0.8) / 4
    assert terms["cvr_counterfactual_risk"] == pytest.approx(expected, rel=1e-5)


def test_rows_without_a_click_add_nothing_to_the_ips_risk(schema: Schema) -> None:
    backbone = _backbone("ips")
    base = _terms(backbone, schema)["cvr_counterfactual_risk"]
    # anything on the unclicked row 1: its label, pCVR, pCTR
    changed = _terms(
        backbone,
        schema,
        conversion=np.array([1.0, 0.0, 0.0, 0.0], np.float32),
        pcvr=np.array([0.7, 0.99, 0.3, 0.1], np.float32),
        pctr=np.array([0.5, 0.9, 0.05, 0.8], np.float32),
    )["cvr_counterfactual_risk"]
    assert changed == pytest.approx(base, rel=1e-6)
    # ...while the same change on a clicked row does change it (the test can fail)
    clicked = _terms(backbone, schema, click=np.ones(4, np.float32))["cvr_counterfactual_risk"]
    assert clicked != pytest.approx(base, rel=1e-3)


def test_the_propensity_clip_applies_only_below_it(schema: Schema) -> None:
    tight = _terms(_backbone("ips", clip=0.1), schema)["cvr_counterfactual_risk"]
    loose = _terms(_backbone("ips", clip=0.01), schema)["cvr_counterfactual_risk"]
    assert tight == pytest.approx((ERROR[0] / 0.5 + ERROR[2] / 0.1 + ERROR[3] / 0.8) / 4, 1e-5)
    assert loose == pytest.approx((ERROR[0] / 0.5 + ERROR[2] / 0.05 + ERROR[3] / 0.8) / 4, 1e-5)


def test_dr_risk_and_imputation_loss_by_hand(schema: Schema) -> None:
    terms = _terms(_backbone("dr", weight=0.5, clip=0.1), schema)
    imputed = np.log1p(np.exp(RAW_IMPUTATION.astype(np.float64)))  # softplus
    propensity = np.array([0.5, 0.2, 0.1, 0.8])
    residual = ERROR - imputed
    risk = np.mean(imputed + CLICK * residual / propensity)
    imputation = np.mean(CLICK * residual**2 / propensity)
    assert terms["cvr_counterfactual_risk"] == pytest.approx(0.5 * risk, rel=1e-5)
    assert terms["cvr_imputation_loss"] == pytest.approx(0.5 * imputation, rel=1e-5)
    # the unclicked row counts through its imputed error only
    assert risk != pytest.approx(np.mean(CLICK * ERROR / propensity), rel=1e-3)


@pytest.mark.parametrize("variant", ["ips", "dr"])
def test_the_risk_never_trains_the_propensity(variant: str, schema: Schema) -> None:
    backbone = _backbone(variant)
    pctr, pcvr = tf.Variable(PCTR), tf.Variable(PCVR)
    representation = tf.constant(RAW_IMPUTATION[:, np.newaxis])
    with tf.GradientTape() as tape:
        terms = backbone.output_losses(
            schema,
            {"ctr": tf.identity(pctr), "cvr": tf.identity(pcvr)},
            {"click": tf.constant(CLICK), "conversion": tf.constant(CONVERSION)},
            [representation, representation],
            training=True,
        )
        total = tf.add_n(list(terms.values()))
    grad_ctr, grad_cvr = tape.gradient(total, [pctr, pcvr])
    assert grad_ctr is None
    assert np.abs(grad_cvr.numpy()).sum() > 0


@pytest.mark.parametrize(
    ("architecture", "hparams"),
    [
        ("escm2", {"variant": "ips"}),
        ("escm2", {"variant": "dr"}),
        ("escm2", {"base": "mmoe", "counterfactual_weight": 0.5}),
    ],
)
def test_trains_with_each_variant_and_adds_its_risk(
    architecture: str, hparams: dict, schema: Schema
) -> None:
    features, labels = make_data(1024, seed=1)
    dataset = tf.data.Dataset.from_tensor_slices((features, labels)).batch(128)
    keras.utils.set_random_seed(3)
    plain = {"embedding_l2": 0.0, "cross_layers": 0, "tower_units": [8]}
    model = RankingModel(schema, architecture, {**plain, **hparams})
    model.adapt([features])
    model.compile(optimizer=keras.optimizers.Adam(0.02))
    before = model.evaluate(dataset, verbose=0, return_dict=True)
    model.fit(dataset, epochs=3, verbose=0)
    after = model.evaluate(dataset, verbose=0, return_dict=True)
    assert after["total_loss"] < 0.95 * before["total_loss"], (before, after)
    # without embedding L2 the regularization loss is the counterfactual risk alone
    assert after["regularization_loss"] > 0.0
    esmm = RankingModel(schema, "esmm", {**plain, "base": hparams.get("base", "shared_bottom")})
    esmm.adapt([features])
    esmm.compile(optimizer=keras.optimizers.Adam(0.02))
    assert esmm.evaluate(dataset, verbose=0, return_dict=True)["regularization_loss"] == 0.0


@pytest.mark.parametrize("variant", ["ips", "dr"])
def test_get_config_round_trip(variant: str, schema: Schema) -> None:
    features, _ = make_data(32, seed=2)
    model = RankingModel(schema, "escm2", {"variant": variant, "base": "mmoe"})
    model(features)
    backbone = model.backbone
    config = backbone.get_config()
    clone = ESCM2.from_config(config)
    assert clone.get_config() == config
    assert (clone.variant, clone.counterfactual_weight, clone.propensity_clip) == (
        variant,
        0.1,
        pytest.approx(1 / 15),
    )
    assert len(clone.imputation_towers) == (2 if variant == "dr" else 0)
    assert type(clone.base).__name__ == "MMoE"
    again = RankingModel(**model.get_config())
    assert again.hparams == model.hparams


def test_bad_config_values_name_the_key(schema: Schema) -> None:
    with pytest.raises(ConfigError, match="architecture 'escm2': variant: "):
        RankingModel(schema, "escm2", {"variant": "ipw"})
    with pytest.raises(ConfigError, match="propensity_clip: Input should be greater than 0"):
        RankingModel(schema, "escm2", {"propensity_clip": 0.0})
    with pytest.raises(ConfigError, match="counterfactual_weight: Input should be greater"):
        RankingModel(schema, "escm2", {"counterfactual_weight": -1.0})
    with pytest.raises(ConfigError, match="counterfactual_wieght: unknown key"):
        RankingModel(schema, "escm2", {"counterfactual_wieght": 1.0})


def test_bad_constructor_arguments_show_the_value() -> None:
    base = registry.get("shared_bottom").from_config_dict({}, 2)
    with pytest.raises(ValueError, match=r"variant must be one of .* got 'ipw'"):
        ESCM2(2, base=base, variant="ipw")
    with pytest.raises(ValueError, match=r"propensity_clip must be in \(0, 1\], got 1\.5"):
        ESCM2(2, base=base, variant="ips", propensity_clip=1.5)
    with pytest.raises(ValueError, match=r"counterfactual_weight must be >= 0, got -0\.1"):
        ESCM2(2, base=base, variant="ips", counterfactual_weight=-0.1)
    with pytest.raises(ValueError, match=r"'dr' needs 2 imputation towers .* got 0"):
        ESCM2(2, base=base, variant="dr")
