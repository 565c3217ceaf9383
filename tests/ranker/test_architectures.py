"""Architecture-level claims: equivalences, loss masking, ESMM's product, configs, task counts."""

from __future__ import annotations

import numpy as np
import pytest

from ranker import registry
from ranker.errors import ConfigError
from ranker.keras_compat import keras, tf
from ranker.model import RankingModel
from ranker.schema import Schema
from tests.ranker.conftest import click_log_schema, make_data
from tests.ranker.mirrored import train_mirrored

NON_ESMM = [name for name in registry.names() if not registry.get(name).entire_space]


def _batch(data: tuple, n: int = 256) -> tuple[dict, dict]:
    features, labels = data
    return {k: v[:n] for k, v in features.items()}, {k: v[:n] for k, v in labels.items()}


def test_mmoe_with_one_expert_equals_shared_bottom_with_the_same_weights(
    schema: Schema, data: tuple
) -> None:
    features, _ = _batch(data)
    bottom = RankingModel(schema, "shared_bottom", {"bottom_units": [8], "tower_units": [4]})
    mmoe = RankingModel(schema, "mmoe", {"num_experts": 1, "expert_units": [8], "tower_units": [4]})
    bottom(features), mmoe(features)
    mmoe.feature_inputs[0].set_weights(bottom.feature_inputs[0].get_weights())
    mmoe.backbone.experts.experts[0].set_weights(bottom.backbone.bottom.get_weights())
    for source, target in zip(
        bottom.towers + bottom.crosses, mmoe.towers + mmoe.crosses, strict=True
    ):
        target.set_weights(source.get_weights())
    expected, got = bottom(features), mmoe(features)
    for name in schema.output_names:
        np.testing.assert_allclose(got[name].numpy(), expected[name].numpy(), atol=1e-6)


@pytest.mark.parametrize("architecture", NON_ESMM)
def test_conversions_on_non_click_rows_change_nothing(
    architecture: str, schema: Schema, data: tuple
) -> None:
    features, labels = _batch(data)
    keras.utils.set_random_seed(0)  # an initial CVR head that scores ~0.5 everywhere would make
    model = RankingModel(schema, architecture)  # the flipped-label counter-check below moot
    model(features)
    no_click = labels["click"] == 0
    noisy = dict(
        labels, conversion=np.where(no_click, 1.0, labels["conversion"]).astype(np.float32)
    )

    def loss_and_grads(batch_labels: dict) -> tuple[float, list[np.ndarray]]:
        with tf.GradientTape() as tape:
            loss = model.compute_loss((features, batch_labels), training=False)
        grads = tape.gradient(loss, model.trainable_variables)
        return float(loss), [tf.convert_to_tensor(g).numpy() for g in grads if g is not None]

    base_loss, base_grads = loss_and_grads(labels)
    noisy_loss, noisy_grads = loss_and_grads(noisy)
    assert noisy_loss == pytest.approx(base_loss, abs=1e-7)
    for a, b in zip(base_grads, noisy_grads, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-7)
    # ...while a conversion flipped on a clicked row does change the loss (the test can fail).
    flipped = dict(
        labels, conversion=np.where(no_click, labels["conversion"], 1 - labels["conversion"])
    )
    assert loss_and_grads(flipped)[0] != pytest.approx(base_loss, abs=1e-4)


@pytest.mark.parametrize("base", ["shared_bottom", "mmoe", "ple"])
def test_esmm_ctcvr_is_ctr_times_cvr_and_never_above_ctr(
    base: str, schema: Schema, data: tuple
) -> None:
    features, labels = _batch(data, 512)
    model = RankingModel(schema, "esmm", {"base": base})
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    model.fit(
        tf.data.Dataset.from_tensor_slices((features, labels)).batch(128), epochs=1, verbose=0
    )
    out = {k: v.numpy() for k, v in model(features).items()}
    np.testing.assert_allclose(out["ctcvr"], out["ctr"] * out["cvr"], rtol=1e-6)
    assert (out["ctcvr"] <= out["ctr"]).all()
    assert [o.output for o in model.objectives] == ["ctr", "ctcvr"]
    assert (
        model.objectives[1].labels == ("click", "conversion") and model.objectives[1].mask is None
    )


def test_esmm_without_the_product_says_which_product_is_needed() -> None:
    schema = click_log_schema(products=[])
    with pytest.raises(ConfigError, match=r"needs a product of \[ctr, cvr\]"):
        RankingModel(schema, "esmm")


@pytest.mark.parametrize("architecture", ["omoe", "mmoe", "cgc", "ple"])
def test_gated_models_report_gate_weights_per_task(
    architecture: str, schema: Schema, data: tuple
) -> None:
    features, _ = _batch(data, 32)
    gates = RankingModel(schema, architecture).gate_weights(features)
    assert {"ctr", "cvr"} <= set(gates)
    for weights in gates.values():
        np.testing.assert_allclose(weights.numpy().sum(axis=1), 1.0, atol=1e-5)
    if architecture == "omoe":
        np.testing.assert_allclose(gates["ctr"].numpy(), gates["cvr"].numpy())


def test_unknown_architecture_lists_the_known_ones() -> None:
    with pytest.raises(
        ConfigError, match="unknown architecture 'mmo'; known: single_task, shared_bottom"
    ):
        registry.get("mmo")


def test_registering_a_name_twice_fails() -> None:
    with pytest.raises(ValueError, match="'mmoe' is registered twice"):
        registry.register("mmoe")(type("Again", (registry.get("mmoe"),), {}))


def test_hyperparameter_typos_name_the_key(schema: Schema) -> None:
    with pytest.raises(ConfigError, match="architecture 'mmoe': num_expert: unknown key"):
        RankingModel(schema, "mmoe", {"num_expert": 3})
    with pytest.raises(
        ConfigError, match="num_experts: Input should be greater than or equal to 1"
    ):
        RankingModel(schema, "mmoe", {"num_experts": 0})
    with pytest.raises(ConfigError, match="task_weights: 'ctcvr' is not a task"):
        RankingModel(schema, "mmoe", task_weights={"ctcvr": 2.0})


THREE_TASKS = {
    "tasks": [
        {"name": "ctr", "label": "click"},
        {"name": "cvr", "label": "conversion", "condition": "click"},
        {"name": "dwell", "label": "dwell_seconds", "type": "regression", "weight": 0.5},
    ]
}


@pytest.mark.parametrize("architecture", registry.names())
@pytest.mark.parametrize("tasks", ["one", "three"])
def test_any_number_of_tasks_binary_and_regression(architecture: str, tasks: str) -> None:
    if tasks == "one":
        schema = click_log_schema(tasks=[{"name": "ctr", "label": "click"}], products=[])
    else:
        schema = click_log_schema(**THREE_TASKS)
    features, labels = make_data(64, seed=3)
    labels["dwell_seconds"] = np.linspace(0, 30, 64).astype(np.float32)
    model = RankingModel(
        schema, architecture, loss_weighting="uncertainty" if tasks == "three" else "fixed"
    )
    model.compile(optimizer=keras.optimizers.Adam(0.01), run_eagerly=True)
    history = model.fit(
        tf.data.Dataset.from_tensor_slices((features, labels)).batch(32), epochs=1, verbose=0
    )
    assert np.isfinite(history.history["loss"]).all()
    out = model(features)
    assert set(out) == set(schema.output_names)
    assert all(v.shape == (64,) for v in out.values())
    if tasks == "three":
        dwell = model.objectives[2]
        assert (dwell.type, dwell.weight, model.towers[2].task_type) == (
            "regression",
            0.5,
            "regression",
        )


def test_cross_layers_and_embedding_l2_are_applied(schema: Schema, data: tuple) -> None:
    features, _ = _batch(data, 128)
    plain = RankingModel(schema, "mmoe", {"cross_layers": 0, "embedding_l2": 0.0})
    crossed = RankingModel(schema, "mmoe", {"cross_layers": 2, "embedding_l2": 1e-3})
    plain(features), crossed(features)
    assert [layer.name for layer in crossed.crosses] == ["cross_0", "cross_1"]
    extra = {v.name for v in crossed.trainable_variables} - {
        v.name for v in plain.trainable_variables
    }
    assert any("cross_0" in name for name in extra)
    inputs = crossed.feature_inputs[0]
    hashed = [name for name in inputs.embeddings if name.startswith("hashed_")]
    assert hashed and len(hashed) < len(inputs.embeddings)  # the schema has both kinds of table
    owners = {f.name for f in inputs.features if f.vocabulary is None and f.num_buckets}
    assert {inputs.placement[name][0] for name in owners} == set(hashed)
    assert not plain.losses and len(crossed.losses) == len(hashed)
    assert float(tf.add_n(crossed.losses)) > 0.0
    both = RankingModel(schema, "mmoe", {"embedding_l2": 1e-3, "vocabulary_embedding_l2": 1e-3})
    both(features)
    assert len(both.losses) == len(inputs.embeddings)


def test_every_architecture_trains_under_a_two_device_mirrored_strategy(tmp_path) -> None:
    """Each registered architecture, with its defaults, trains two epochs on two replicas (the
    task losses go down) and exports: its variables and own loss terms are replica-safe."""
    names = registry.names()
    result = train_mirrored({name: (name, {}, "fixed") for name in names}, tmp_path)
    assert result["replicas"] == 2
    for name in names:
        losses = result[name]
        assert np.isfinite(losses).all() and losses[-1] < losses[0], (name, losses)
        assert (tmp_path / name / "saved_model.pb").exists()
