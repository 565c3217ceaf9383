"""Training on what was served: `mtrank serve --log-features`, `mtrank simulate`, `mtrank logs
to-dataset`, `mtrank train` on its output, and no training-serving skew.

The check of skew: the served model, scoring the dataset's rows as the TRAINING reader reads them
(`training.data.make_dataset`, the path every later model learns from), gives back the scores it
served for those items (atol 1e-6), for every shown item of every split.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from tests.serving.conftest import HPARAMS, cli, served

REQUESTS, TOP_K, CANDIDATES = 120, 5, 40


def test_a_model_trains_on_served_features_and_they_reproduce_the_served_scores(
    export: Any, embedded_data: Path, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    shutil.copytree(export.version_dir, models / "mmoe" / "1")
    exposures, feedback = tmp_path / "exposures.jsonl", tmp_path / "feedback.jsonl"
    flags = ["--store", embedded_data, "--exposure-log", exposures, "--log-features"]
    with served(models, *flags) as url:
        done = cli(
            "simulate", "--url", url, "--data", embedded_data, "--requests", REQUESTS,
            "--top-k", TOP_K, "--candidates", CANDIDATES, "--feedback", feedback, "--seed", 11,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]

    data = tmp_path / "logdata"
    done = cli(
        "logs", "to-dataset", "--exposures", exposures, "--feedback", feedback, "--out", data
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    tables = {split: pq.read_table(data / f"{split}.parquet") for split in ("train", "val", "test")}
    assert sum(t.num_rows for t in tables.values()) == REQUESTS * TOP_K, summary

    config = tmp_path / "train.yaml"
    config.write_text(HPARAMS)
    done = cli(
        "train", "--data", data, "--model", "mmoe", "--out", tmp_path / "next", "--epochs", 1,
        "--batch-size", 256, "--config", config, "--quiet",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    trained = json.loads(done.stdout.strip().splitlines()[-1])
    assert trained["version"] == 1 and set(trained["test"]) >= {"ctr", "cvr", "ctcvr"}

    from ranker.schema import Schema
    from training.data import ReadOptions, make_dataset
    from training.evaluation import saved_model_scorer, score_dataset

    schema = Schema.load(data / "schema.yaml")
    score = saved_model_scorer(export.version_dir)
    for split, table in tables.items():
        dataset = make_dataset(data / f"{split}.parquet", schema, ReadOptions(batch_size=1024))
        scores, labels = score_dataset(score, dataset)
        for output in ("ctr", "cvr", "ctcvr"):
            np.testing.assert_allclose(
                scores[output],
                table.column(f"served_{output}").to_numpy(),
                rtol=0,
                atol=1e-6,
                err_msg=f"{split}: {output}",
            )
        # the labels are the feedback's: clicks and conversions of the shown items
        np.testing.assert_array_equal(labels["click"], table.column("click").to_numpy())
