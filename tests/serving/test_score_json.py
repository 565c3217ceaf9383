"""The score rows of a response (serving.score_json.scores_json): JSON that parses back to the
float32 scores rounded to 8 decimals, in request order, whatever the names and ids hold."""

from __future__ import annotations

import json

import numpy as np
import pytest

from serving import score_json
from serving.score_json import scores_json, with_scores


def test_rows_are_pinned_byte_for_byte() -> None:
    scores = {
        "ctr": np.array([0.25, 1.5, -0.125], np.float32),
        "cvr": np.array([0.0281846, 0.0, 1e-9], np.float32),
    }
    assert scores_json(["ctr", "cvr"], scores, ["i1", "i2", "i1"]) == (
        '[{"item_id":"i1","ctr":0.25000000,"cvr":0.02818460},'
        '{"item_id":"i2","ctr":1.50000000,"cvr":0.00000000},'
        '{"item_id":"i1","ctr":-0.12500000,"cvr":0.00000000}]'
    )
    assert (
        scores_json(["ctr"], scores)
        == '[{"ctr":0.25000000},{"ctr":1.50000000},{"ctr":-0.12500000}]'
    )


@pytest.mark.parametrize("scale", [1.0, 1e-6, -3.0, 1e4, 2e9, -5e10])
def test_scores_parse_back_to_the_float32_scores_rounded_to_8_decimals(scale: float) -> None:
    rng = np.random.default_rng(0)
    scores = {name: (rng.random(300) * scale).astype(np.float32) for name in ("ctr", "cvr")}
    ids = [f"i{i}" for i in rng.integers(0, 50, 300)]
    rows = json.loads(scores_json(["cvr", "ctr"], scores, ids))
    assert [row["item_id"] for row in rows] == ids
    assert list(rows[0]) == ["item_id", "cvr", "ctr"]  # the order of `outputs`
    for name in ("ctr", "cvr"):
        expected = np.round(scores[name].astype(np.float64), 8).tolist()
        assert [row[name] for row in rows] == expected  # exactly: the same decimal, parsed


def test_names_and_ids_need_no_escaping_by_the_caller() -> None:
    names = ["c%str", 'q"uote', "r%%s"]
    ids = ["a%s", 'b"\\', "ü€", "%d"]
    scores = {name: np.full(len(ids), 0.5, np.float32) for name in names}
    rows = json.loads(scores_json(names, scores, ids))
    assert rows == [{"item_id": i, **{name: 0.5 for name in names}} for i in ids]


def test_a_non_finite_score_is_an_error_naming_the_output() -> None:
    scores = {"ctr": np.array([0.5, np.nan], np.float32), "cvr": np.ones(2, np.float32)}
    with pytest.raises(ValueError, match="'ctr'"):
        scores_json(["cvr", "ctr"], scores, ["a", "b"])


def test_columns_of_another_length_than_the_ids_are_an_error() -> None:
    with pytest.raises(ValueError):
        scores_json(["ctr"], {"ctr": np.ones(2, np.float32)}, ["a", "b", "c"])


def test_with_scores_appends_the_encoded_rows_last() -> None:
    text = with_scores({"model": "m", "variant": None}, "scores", '[{"ctr":0.50000000}]')
    assert text == '{"model": "m", "variant": null,"scores":[{"ctr":0.50000000}]}'
    assert json.loads(with_scores({}, "predictions", "[]")) == {"predictions": []}


def test_probabilities_are_written_by_numpy_with_the_bytes_of_the_general_path() -> None:
    rng = np.random.default_rng(1)
    edges = [0.0, 1e-9, 4.9e-9, 5.1e-9, 0.999999995, 1.0, 9.99999, 0.5, 1e-8]
    scores = {
        "ctr": np.concatenate([rng.random(200), edges]).astype(np.float32),
        'c"vr': np.concatenate([rng.random(200) * 9, edges[::-1]]).astype(np.float32),
    }
    names = list(scores)
    ids = [f"i{i}" for i in range(200)] + ["é", 'q"', "%s", "\\", "", "a b", "\n", "x", "y"]
    values = [score_json._finite(name, scores[name]) for name in names]
    for with_ids in (ids, None):
        fixed = score_json._fixed_rows(names, values, with_ids)
        assert fixed is not None
        assert fixed == score_json._formatted_rows(names, values, with_ids)
    assert json.loads(fixed)[0] == {"ctr": round(float(scores["ctr"][0]), 8),
                                    'c"vr': round(float(scores['c"vr'][0]), 8)}  # fmt: skip
    negative = {"ctr": np.array([0.5, -0.25], np.float32)}
    assert (
        score_json._fixed_rows(["ctr"], [score_json._finite("ctr", negative["ctr"])], None) is None
    )
    assert score_json._fixed_rows([], [], ["a"]) is None
