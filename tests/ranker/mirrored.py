"""Training under a two-device MirroredStrategy, in a fresh process (two logical CPU devices must
be configured before TensorFlow initializes them): `train_mirrored(runs, out)` trains each
(architecture, hparams, strategy) run on the click-log data for two epochs, exports it, and
returns each run's unweighted task-loss sum per epoch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import ranker
    from ranker.keras_compat import keras, tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )
    from ranker.model import RankingModel
    from tests.ranker.conftest import click_log_schema, make_data
    from training.export import export_saved_model
    from training.task_balance import BalancingMonitor

    runs, out = json.loads(sys.argv[1]), sys.argv[2]
    features, labels = make_data(512, seed=1)
    data = tf.data.Dataset.from_tensor_slices((features, labels)).batch(128)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    result = {"replicas": strategy.num_replicas_in_sync}
    for name, (architecture, hparams, weighting) in runs.items():
        keras.utils.set_random_seed(0)
        with strategy.scope():
            model = RankingModel(
                click_log_schema(), architecture, hparams, loss_weighting=weighting
            )
            model.adapt([features])
            model.compile(optimizer=keras.optimizers.legacy.Adam(0.01))
        history = model.fit(data, epochs=2, verbose=0, callbacks=[BalancingMonitor(None)])
        export_saved_model(model, out + "/" + name)
        # the unweighted task losses: the logged `loss` weighs them with changing coefficients
        losses = [h for key, h in history.history.items() if key.endswith("_loss")
                  and key not in ("loss", "regularization_loss", "total_loss")]
        result[name] = [sum(values) for values in zip(*losses)]
    print(json.dumps(result))
    """
)


def train_mirrored(runs: dict[str, tuple[str, dict[str, Any], str]], out: Path) -> dict[str, Any]:
    """{run name: (architecture, hparams, balancing strategy)} -> {run name: task-loss sums per
    epoch, "replicas": the strategy's replica count}; fails with the process's stderr."""
    root = Path(__file__).resolve().parents[2]
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(runs), str(out)],
        capture_output=True,
        text=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]
