"""Every registered architecture, end to end: build from a schema, train (the loss goes down),
export a SavedModel, reload it in a fresh process that imports neither ranker nor TFRS, and get
the same outputs from raw features. A new architecture is covered the day it is registered, and
so are the options: the defaults (DCN-v2 crosses, embedding L2), the model without them
(`+plain`), attention pooling of a sequence."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from ranker import registry
from ranker.keras_compat import keras, tf
from ranker.model import RankingModel
from ranker.schema import Schema
from tests.ranker.conftest import make_data
from training.export import export_saved_model

RELOAD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    exports, probe_file, out_file = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
    probe = dict(np.load(probe_file))
    results = {}
    for name, path in exports.items():
        serve = tf.saved_model.load(path).signatures["serving_default"]
        outputs = serve(**{k: tf.constant(v) for k, v in probe.items()})
        for task, value in outputs.items():
            results[f"{name}/{task}"] = value.numpy()
    heavy = sorted(m for m in ("ranker", "training", "tensorflow_recommenders") if m in sys.modules)
    np.savez(out_file, **results)
    print(json.dumps({"heavy_modules": heavy}))
    """
)


def _probe(n: int = 64) -> dict[str, np.ndarray]:
    """Raw features including unseen ids, missing values and a NaN, as a client would send them."""
    features, _ = make_data(n, seed=11)
    features["user_id"][:4] = ["never-seen", "", "u1", "u2"]
    features["device"][:2] = ["tv", ""]
    features["price"][5] = np.nan
    features["recent_items"][6] = ["", "", "", ""]
    return features


# the options' hyperparameters: the defaults have DCN-v2 crosses and embedding L2, "+plain" is
# the model without them; "+dselect_k" PLE's gates (3 experts a task gate: the penalty on codes
# with no expert; 4 on the shared gate)
OPTIONS = {
    "plain": {"cross_layers": 0, "dropout": 0.0, "embedding_l2": 0.0},
    "dropout": {"dropout": 0.2},
    "dselect_k": {"gate": "dselect_k"},
    "noisy_top_k": {"gate": {"kind": "noisy_top_k", "k": 1}},
    "attention": None,  # the schema's sequence pooled by target attention
}
VARIANTS = [
    *registry.names(),
    *("mmoe+plain", "mmoe+attention", "ple+dropout", "ple+dselect_k", "mmoe+noisy_top_k"),
]


def _attention_schema(schema: Schema) -> Schema:
    raw = schema.to_dict()
    raw["features"] = [
        {**f, "pooling": "attention"} if f["name"] == "recent_items" else f for f in raw["features"]
    ]
    return Schema.from_dict(raw)


@contextmanager
def _warnings(text: str) -> Iterator[list[str]]:
    """The messages of TensorFlow's logger that contain `text`, logged inside the block."""
    found: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if text in record.getMessage():
                found.append(record.getMessage())

    handler = Collect()
    tf.get_logger().addHandler(handler)
    try:
        yield found
    finally:
        tf.get_logger().removeHandler(handler)


def _selected(request: pytest.FixtureRequest) -> list[str]:
    """The variants the session's selected tests of this module need (`-k aitm` trains one;
    a test without an `architecture` parameter needs them all)."""
    wanted: set[str] = set()
    for item in request.session.items:
        if item.module is not request.module:
            continue
        callspec = getattr(item, "callspec", None)
        if callspec is None or "architecture" not in callspec.params:
            return VARIANTS
        wanted.add(callspec.params["architecture"])
    return [name for name in VARIANTS if name in wanted]


@pytest.fixture(scope="module")
def trained(
    schema: Schema, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> dict:
    """Trains and exports each selected variant once, then reloads all exports in one fresh
    process."""
    features, labels = make_data(2048, seed=0)
    dataset = tf.data.Dataset.from_tensor_slices((features, labels)).batch(256)
    root = tmp_path_factory.mktemp("exports")
    probe = _probe()
    results: dict[str, dict] = {}
    for name in _selected(request):
        tf.keras.utils.set_random_seed(7)
        architecture, _, extra = name.partition("+")
        model = RankingModel(
            _attention_schema(schema) if extra == "attention" else schema,
            architecture,
            OPTIONS[extra] if extra else None,
        )
        model.adapt([features])
        model.compile(optimizer=keras.optimizers.Adam(0.01))
        before = model.evaluate(dataset, verbose=0, return_dict=True)["loss"]
        model.fit(dataset, epochs=3, verbose=0)
        after = model.evaluate(dataset, verbose=0, return_dict=True)["loss"]
        with _warnings("Skipping full serialization") as unbuilt:
            path = export_saved_model(model, root / name / "1")
        keras_out = {k: v.numpy() for k, v in model(probe).items()}
        results[name] = {
            "before": before,
            "after": after,
            "path": str(path),
            "keras": keras_out,
            "unbuilt": unbuilt,
        }
    np.savez(root / "probe.npz", **probe)
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    exports = json.dumps({name: r["path"] for name, r in results.items()})
    run = subprocess.run(
        [sys.executable, "-c", RELOAD, exports, str(root / "probe.npz"), str(root / "out.npz")],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    reloaded = dict(np.load(root / "out.npz"))
    return {"models": results, "reloaded": reloaded, "heavy_modules": report["heavy_modules"]}


@pytest.mark.parametrize("architecture", VARIANTS)
def test_trains_exports_and_reloads_without_mtrank(
    architecture: str, trained: dict, schema: Schema
) -> None:
    result = trained["models"][architecture]
    assert result["after"] < 0.95 * result["before"], (result["before"], result["after"])
    assert trained["heavy_modules"] == []
    for output in schema.output_names:
        served = trained["reloaded"][f"{architecture}/{output}"]
        assert served.dtype == np.float32 and served.shape == (64,)
        np.testing.assert_allclose(served, result["keras"][output], atol=1e-5)


@pytest.mark.parametrize("architecture", VARIANTS)
def test_every_exported_layer_is_built(architecture: str, trained: dict) -> None:
    """TensorFlow warns "Skipping full serialization of ... because it is not built" for a layer
    created and never called (a kept template network, a backbone called around `__call__`)."""
    assert trained["models"][architecture]["unbuilt"] == []


def test_export_has_no_optimizer_state(trained: dict) -> None:
    path = Path(trained["models"]["mmoe"]["path"])
    names = [name for name, _ in tf.train.list_variables(str(path / "variables" / "variables"))]
    assert names and not [n for n in names if "optimizer" in n.lower()]
    signature = tf.saved_model.load(str(path)).signatures["serving_default"]
    inputs = signature.structured_input_signature[1]
    assert inputs["price"].dtype == tf.float32 and inputs["user_id"].dtype == tf.string
    assert inputs["recent_items"].shape.rank == 2
    assert set(signature.structured_outputs) == {"ctr", "cvr", "ctcvr"}
