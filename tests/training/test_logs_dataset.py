"""`mtrank logs to-dataset` on handmade JSON-lines logs: attribution, merging, skips, the split,
files that the training reader takes as they are; and the feedback times `mtrank simulate` writes.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ranker.errors import MtrankError
from ranker.schema import Schema
from training.ab import iso_time, read_feedback
from training.commands.simulate import conversion_delays, event_times
from training.logs import Options, parse_split, to_dataset
from training.logs.attribution import parse_window

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z
DAY = 86_400.0
THIRDS = (0.4, 0.3, 0.3)
SCHEMA = Schema.from_dict(
    {
        "features": [
            {"name": "user_id", "type": "categorical", "entity": "user", "num_buckets": 16},
            {"name": "recent_items", "type": "sequence", "entity": "user", "max_length": 3,
             "shared_embedding": "item_id"},
            {"name": "item_id", "type": "categorical", "entity": "item", "num_buckets": 16},
            {"name": "price", "type": "numeric", "entity": "item"},
            {"name": "device", "type": "categorical", "entity": "context",
             "vocabulary": ["ios", "web"]},
            {"name": "position", "type": "numeric", "entity": "context", "default": 1.0},
        ],
        "tasks": [
            {"name": "ctr", "label": "click"},
            {"name": "cvr", "label": "conversion", "condition": "click"},
        ],
        "products": [{"name": "ctcvr", "of": ["ctr", "cvr"]}],
    }
)  # fmt: skip


def schema_line(model: str = "mmoe", version: str = "1", schema: Schema = SCHEMA) -> dict[str, Any]:
    return {"kind": "schema", "model": model, "version": version, "schema": schema.to_dict()}


def exposure(
    request_id: str | None,
    at: float,
    items: list[str],
    *,
    model: str = "mmoe",
    features: bool = True,
    prices: list[float] | None = None,
) -> dict[str, Any]:
    """An exposure line as `mtrank serve --log-features` writes it (common format)."""
    n = len(items)
    line: dict[str, Any] = {
        "request_id": request_id,
        "time": iso_time(at),
        "user_id": "u1",
        "experiment": None,
        "variant": None,
        "bucket": None,
        "model": model,
        "version": "1",
        "policy": "fused",
        "candidates": n + 3,
        "item_ids": items,
        "context": {"device": "web"},
        "scores": {
            "ctr": [0.25] * n,
            "cvr": [0.5] * n,
            "ctcvr": [0.125] * n,
            "score": [float(n - k) for k in range(n)],
        },
        "shadow": {},
        "degraded": False,
    }
    if request_id is None:
        del line["request_id"]
    if features:
        line["features"] = {
            "user": {"user_id": "u1", "recent_items": ["i7", "i8"]},
            "context": {"device": "web", "position": 1.0},
            "items": {
                "item_id": items,
                "price": prices if prices is not None else [0.1 * (k + 1) for k in range(n)],
            },
        }
    return line


def shown(request_id: str, item_id: str, **fields: Any) -> dict[str, Any]:
    return {"request_id": request_id, "item_id": item_id, **fields}


def write(path: Path, lines: list[Any]) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def rows(out: Path) -> list[dict[str, Any]]:
    """All rows of train, val and test, in that order."""
    tables = [pq.read_table(out / f"{split}.parquet") for split in ("train", "val", "test")]
    return [row for table in tables for row in table.to_pylist()]


def three_requests(tmp_path: Path) -> Path:
    """r1, r2, r3 at T0, T0 + 10 s, T0 + 20 s, returning i1, i2, i3."""
    return write(
        tmp_path / "exposures.jsonl",
        [schema_line(), *(exposure(f"r{n}", T0 + 10 * (n - 1), [f"i{n}"]) for n in (1, 2, 3))],
    )


# ---- attribution --------------------------------------------------------------------------------


def test_a_conversion_counts_only_inside_the_window_after_its_click(tmp_path: Path) -> None:
    exposures = three_requests(tmp_path)
    feedback = write(
        tmp_path / "feedback.jsonl",
        [
            shown("r1", "i1", click=1, conversion=1, time=iso_time(T0),
                  conversion_time=iso_time(T0 + 3600)),  # 1 hour: inside
            shown("r2", "i2", click=1, conversion=1, time=T0 + 10,
                  conversion_time=T0 + 10 + 8 * DAY),  # 8 days (unix seconds): outside
            shown("r3", "i3", click=1, conversion=1, time=iso_time(T0 + 20),
                  conversion_time=iso_time(T0 + 20 + 7 * DAY)),  # exactly 7 days: inside
        ],
    )  # fmt: skip
    out = tmp_path / "out"
    summary = to_dataset([exposures], [feedback], out, Options(window=7 * DAY, split=THIRDS))
    assert [(r["request_id"], r["click"], r["conversion"]) for r in rows(out)] == [
        ("r1", 1, 1),
        ("r2", 1, 0),
        ("r3", 1, 1),
    ]
    assert summary["skipped"]["conversion_outside_window"] == 1
    assert summary["positives"] == {"click": 3, "conversion": 2}
    # so the test can fail: a wider window keeps the 8-day conversion
    wider = to_dataset([exposures], [feedback], out, Options(window=9 * DAY, split=THIRDS))
    assert [r["conversion"] for r in rows(out)] == [1, 1, 1]
    assert wider["skipped"]["conversion_outside_window"] == 0


@pytest.mark.parametrize(("window", "conversion"), [("95s", 1), ("89s", 0)])
def test_event_style_feedback_lines_merge(tmp_path: Path, window: str, conversion: int) -> None:
    """An impression line, a click line 10 s later, a conversion line 100 s after the
    impression: one row, the conversion 90 s after the click (not 100 s after the exposure)."""
    exposures = three_requests(tmp_path)
    feedback = write(
        tmp_path / "feedback.jsonl",
        [
            shown("r1", "i1", click=0, position=1, time=T0),
            shown("r1", "i1", click=1, time=T0 + 10),
            shown("r1", "i1", conversion=1, time=T0 + 100),
            shown("r2", "i2", click=0),
            shown("r3", "i3", click=0),
        ],
    )
    out = tmp_path / "out"
    options = Options(window=parse_window(window), split=THIRDS)
    summary = to_dataset([exposures], [feedback], out, options)
    first = rows(out)[0]
    assert (first["click"], first["conversion"]) == (1, conversion)
    assert summary["skipped"]["conversion_outside_window"] == 1 - conversion
    assert summary["rows"] == {"train": 1, "val": 1, "test": 1}
    assert summary["feedback"] == {"lines": 5, "items": 3}


@pytest.mark.parametrize(("window", "conversion"), [("55s", 1), ("45s", 0)])
def test_a_conversion_counts_after_any_of_its_clicks(
    tmp_path: Path, window: str, conversion: int
) -> None:
    """Clicks at +10 s and +50 s, a conversion at +100 s: 50 s after the later click."""
    exposures = three_requests(tmp_path)
    feedback = write(
        tmp_path / "feedback.jsonl",
        [
            shown("r1", "i1", click=1, time=T0 + 10),
            shown("r1", "i1", click=1, time=T0 + 50),
            shown("r1", "i1", click=1, conversion=1, time=T0 + 10, conversion_time=T0 + 100),
            shown("r2", "i2", click=0),
            shown("r3", "i3", click=0),
        ],
    )
    out = tmp_path / "out"
    to_dataset([exposures], [feedback], out, Options(window=parse_window(window), split=THIRDS))
    assert rows(out)[0]["conversion"] == conversion


def test_parse_window() -> None:
    cases = {
        "30s": 30.0,
        "15m": 900.0,
        "12h": 43_200.0,
        "7d": 604_800.0,
        "90": 90.0,
        "1.5h": 5400.0,
    }
    assert {text: parse_window(text) for text in cases} == cases
    for bad in ("7w", "", "-1d", "d", "1e3"):
        with pytest.raises(MtrankError, match="--attribution-window"):
            parse_window(bad)


def test_parse_split() -> None:
    assert parse_split("0.8,0.1,0.1") == (0.8, 0.1, 0.1)
    for bad in ("0.8,0.2", "0.5,0.5,0", "0.5,0.3,0.3", "a,b,c"):
        with pytest.raises(MtrankError, match="--split"):
            parse_split(bad)


# ---- skips --------------------------------------------------------------------------------------


def test_bad_ids_and_unmatched_feedback_are_counted_not_raised(tmp_path: Path) -> None:
    exposures = write(
        tmp_path / "exposures.jsonl",
        [
            schema_line(),
            exposure(None, T0, ["i1"]),  # no request_id
            exposure("r1", T0 + 1, ["i1", "i2"]),
            exposure("r1", T0 + 2, ["i1", "i2"]),  # duplicated request id
            exposure("r2", T0 + 3, ["i2"], features=False),
            exposure("r3", T0 + 4, ["i3", "i4"], prices=[1.0]),  # one price for two items
            exposure("r4", T0 + 5, ["i4"]),
            exposure("r5", T0 + 6, ["i5"]),
        ],
    )
    feedback = write(
        tmp_path / "feedback.jsonl",
        [
            shown("r1", "i1", click=1, time=T0 + 1),
            shown("r1", "i1", click=1, time=T0 + 1),  # the same line twice
            shown("r1", "i9", click=1),  # not returned by r1
            shown("r1", "i2", click=0, conversion=1),  # a conversion without a click
            shown("r2", "i2", click=1),  # its exposure has no features
            shown("r3", "i3", click=1),  # its exposure's columns do not match
            shown("nope", "i1", click=1),
            shown("nope", "i2", click=1),
            {"item_id": "i1", "click": 1},
            shown("r4", "i4", click=0),
            shown("r5", "i5", click=0),
        ],
    )
    out = tmp_path / "out"
    summary = to_dataset([exposures], [feedback], out, Options(split=THIRDS))
    assert summary["skipped"] == {
        "exposure_without_request_id": 1,
        "duplicate_request_id": 1,
        "exposure_without_features": 1,
        "exposure_without_schema": 0,
        "exposure_of_other_model": 0,
        "columns_not_matching_items": 1,
        "features_incomplete": 0,
        "feedback_without_ids": 1,
        "duplicate_feedback": 1,
        "feedback_unknown_request": 2,
        "feedback_unknown_item": 1,
        "feedback_of_skipped_exposure": 2,
        "conversion_without_click": 1,
        "conversion_outside_window": 0,
    }
    got = [(r["request_id"], r["item_id"], r["click"], r["conversion"]) for r in rows(out)]
    assert got == [("r1", "i1", 1, 0), ("r1", "i2", 0, 0), ("r4", "i4", 0, 0), ("r5", "i5", 0, 0)]
    assert summary["rows"] == {"train": 2, "val": 1, "test": 1}  # r1's two rows stay together
    assert summary["requests"] == 3
    assert summary["exposures"] == {
        "lines": 8,
        "schema_lines": 1,
        "with_features": 4,
        "without_feedback": 0,
    }


def test_exposures_without_features_are_an_error_when_none_has_them(tmp_path: Path) -> None:
    exposures = write(tmp_path / "e.jsonl", [exposure("r1", T0, ["i1"], features=False)])
    feedback = write(tmp_path / "f.jsonl", [shown("r1", "i1", click=1)])
    with pytest.raises(
        MtrankError, match="no exposure line has features: serve with --log-features"
    ):
        to_dataset([exposures], [feedback], tmp_path / "out")


def test_models_served_with_different_features_need_model(tmp_path: Path) -> None:
    raw = SCHEMA.to_dict()
    other = Schema.from_dict(
        {**raw, "features": [f for f in raw["features"] if f["name"] != "price"]}
    )
    ple = [exposure(f"p{n}", T0 + n, [f"i{n}"], model="ple") for n in (1, 2)]
    for line in ple:
        del line["features"]["items"]["price"]
    exposures = write(
        tmp_path / "e.jsonl",
        [
            schema_line(),
            schema_line("ple", schema=other),
            *(exposure(f"r{n}", T0 + n, [f"i{n}"]) for n in (1, 2, 3)),
            *ple,
        ],
    )
    feedback = write(
        tmp_path / "f.jsonl", [shown(f"{p}{n}", f"i{n}", click=1) for p in "rp" for n in (1, 2, 3)]
    )
    with pytest.raises(MtrankError, match=r"ple version 1 and mmoe version 1 .*\(price\).*--model"):
        to_dataset([exposures], [feedback], tmp_path / "out", Options(split=THIRDS))
    summary = to_dataset(
        [exposures], [feedback], tmp_path / "out", Options(split=THIRDS, model="mmoe")
    )
    assert summary["models"] == {"mmoe": ["1"]}
    assert summary["skipped"]["exposure_of_other_model"] == 2
    assert summary["skipped"]["feedback_of_skipped_exposure"] == 2
    assert summary["skipped"]["feedback_unknown_request"] == 1  # p3 was never served


# ---- columns, order, split ----------------------------------------------------------------------


def test_rows_hold_served_values_scores_and_extras_in_time_order(tmp_path: Path) -> None:
    # two files, the later one first (a rotated log), and a tie in time broken by request_id
    newer = write(tmp_path / "e.jsonl", [schema_line(), exposure("b", T0 + 60, ["i3", "i4"])])
    older = write(
        tmp_path / "e.jsonl.20270115T080000Z",
        [schema_line(), exposure("z", T0, ["i1"]), exposure("a", T0, ["i2", "i5", "i6"])],
    )
    feedback = write(
        tmp_path / "f.jsonl",
        [
            shown("b", "i4", click=1, position=2, p_click=0.3, p_conversion=0.1),
            shown("b", "i3", click=0, position=1, p_click=0.2, p_conversion=0.1),
            shown("z", "i1", click=0, position=1, p_click=0.1, p_conversion=0.1, user_id="u1"),
            shown("a", "i6", click=0, position=3),
            shown("a", "i2", click=0, position=1),
        ],
    )
    out = tmp_path / "out"
    summary = to_dataset([newer, older], [feedback], out, Options(split=THIRDS))
    got = rows(out)
    assert [(r["request_id"], r["item_id"]) for r in got] == [
        ("a", "i2"), ("a", "i6"), ("z", "i1"), ("b", "i3"), ("b", "i4"),
    ]  # fmt: skip
    assert summary["rows"] == {"train": 2, "val": 1, "test": 2}
    b4 = got[-1]
    assert b4["price"] == float(np.float32(0.2))  # the float32 the model got, exactly
    assert b4["recent_items"] == ["i7", "i8"] and b4["device"] == "web" and b4["position"] == 1.0
    assert (b4["served_ctr"], b4["served_ctcvr"], b4["served_score"]) == (0.25, 0.125, 1.0)
    assert (b4["p_click"], b4["feedback_position"], b4["time"]) == (0.3, 2.0, T0 + 60)
    assert (b4["model"], b4["version"]) == ("mmoe", "1")
    assert got[0]["p_click"] is None  # a's feedback had no p_click
    assert "user_id" in got[0] and got[0]["user_id"] == "u1"  # the feature, not the feedback's
    table = pq.read_table(out / "train.parquet")
    assert table.schema.field("price").type == pa.float64()
    assert table.schema.field("recent_items").type == pa.list_(pa.string())
    assert table.schema.field("click").type == pa.int8()


def test_from_feedback_takes_a_context_feature_from_the_feedback(tmp_path: Path) -> None:
    exposures = three_requests(tmp_path)
    feedback = write(
        tmp_path / "f.jsonl",
        [shown(f"r{n}", f"i{n}", click=0, position=n + 1) for n in (1, 2, 3)],
    )
    out = tmp_path / "out"
    to_dataset([exposures], [feedback], out, Options(split=THIRDS))
    assert [r["position"] for r in rows(out)] == [1.0, 1.0, 1.0]  # served: no skew by default
    to_dataset([exposures], [feedback], out, Options(split=THIRDS, from_feedback=("position",)))
    assert [r["position"] for r in rows(out)] == [2.0, 3.0, 4.0]
    with pytest.raises(MtrankError, match="--from-feedback price: not a context feature"):
        to_dataset([exposures], [feedback], out, Options(from_feedback=("price",)))


def test_too_few_requests_to_split(tmp_path: Path) -> None:
    exposures = write(tmp_path / "e.jsonl", [schema_line(), exposure("r1", T0, ["i1", "i2", "i3"])])
    feedback = write(tmp_path / "f.jsonl", [shown("r1", f"i{n}", click=0) for n in (1, 2, 3)])
    with pytest.raises(MtrankError, match="3 rows from 1 requests are too few to split"):
        to_dataset([exposures], [feedback], tmp_path / "out")


# ---- the command and the training reader --------------------------------------------------------


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "training.cli", *map(str, args)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_the_written_files_are_what_the_training_reader_takes(tmp_path: Path) -> None:
    exposures = write(
        tmp_path / "e.jsonl",
        [schema_line(), *(exposure(f"r{n}", T0 + n, [f"i{n}", "i9"]) for n in range(5))],
    )
    feedback = write(
        tmp_path / "f.jsonl",
        [shown(f"r{n}", f"i{n}", click=1, conversion=n % 2, time=T0 + n) for n in range(5)]
        + [shown(f"r{n}", "i9", click=0) for n in range(5)],
    )
    out = tmp_path / "out"
    done = cli("logs", "to-dataset", "--exposures", exposures, "--feedback", feedback,
               "--out", out, "--split", "0.6,0.2,0.2")  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["rows"] == {"train": 6, "val": 2, "test": 2}
    assert summary["requests"] == 5
    assert "logs to-dataset: wrote" in done.stderr

    from training.data import ReadOptions, make_dataset

    schema = Schema.load(out / "schema.yaml")
    assert schema == SCHEMA
    features, labels = next(
        iter(make_dataset(out / "train.parquet", schema, ReadOptions(batch_size=6, shuffle=False)))
    )
    assert features["price"].dtype.name == "float32"
    assert features["price"].numpy()[0] == np.float32(0.1)  # logged 0.1 comes back exactly
    assert features["price"].numpy()[1] == np.float32(0.2)
    assert features["recent_items"].numpy()[0].tolist() == [b"i7", b"i8", b""]
    assert features["item_id"].numpy().tolist() == [b"i0", b"i9", b"i1", b"i9", b"i2", b"i9"]
    assert labels["click"].numpy().tolist() == [1, 0, 1, 0, 1, 0]
    assert labels["conversion"].numpy().tolist() == [0, 0, 1, 0, 0, 0]


@pytest.mark.parametrize(
    ("exposure_lines", "feedback_lines", "message"),
    [
        (["{}", "{}", "not json"], [], "e.jsonl:3: not a JSON line"),
        ([{"request_id": 7}], [], "e.jsonl:1: 'request_id' must be a string"),
        ([schema_line(), exposure("r1", T0, ["i1"])], [shown("r1", "i1", time="soon")],
         "f.jsonl:1: 'time': expected an ISO-8601 UTC time"),
        ([schema_line(), exposure("r1", T0, ["i1"])], [shown("r1", "i1", click=2)],
         "f.jsonl:1: 'click' must be 0 or 1, got 2"),
    ],
)  # fmt: skip
def test_malformed_lines_are_one_line_errors(
    tmp_path: Path, exposure_lines: list[Any], feedback_lines: list[Any], message: str
) -> None:
    exposures = write(tmp_path / "e.jsonl", exposure_lines)
    feedback = write(tmp_path / "f.jsonl", feedback_lines)
    done = cli("logs", "to-dataset", "--exposures", exposures, "--feedback", feedback,
               "--out", tmp_path / "out")  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len([line for line in lines if not line.startswith("logs to-dataset: ")]) == 1, lines
    assert lines[-1].startswith("mtrank logs: error: ") and message in lines[-1], lines


def test_bad_flags_are_one_line_errors(tmp_path: Path) -> None:
    exposures = three_requests(tmp_path)
    for flags, message in [
        (["--attribution-window", "7w"], "--attribution-window: expected a duration"),
        (["--split", "0.9,0.1"], "--split: expected three positive fractions"),
    ]:
        done = cli("logs", "to-dataset", "--exposures", exposures, "--feedback", exposures,
                   "--out", tmp_path / "out", *flags)  # fmt: skip
        assert done.returncode == 2
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"mtrank logs: error: {message}"), lines


# ---- the feedback times `mtrank simulate` writes, as ab-report reads them -----------------------


def test_simulated_conversion_delays_are_reproducible_exponentials() -> None:
    draws = conversion_delays(np.random.default_rng([0, 5]), 20_000, mean_hours=24.0)
    again = conversion_delays(np.random.default_rng([0, 5]), 20_000, mean_hours=24.0)
    assert np.array_equal(draws, again)
    assert draws.mean() / 3600.0 == pytest.approx(24.0, rel=0.03)  # the mean, 2% standard error
    assert np.median(draws) / 3600.0 == pytest.approx(24.0 * math.log(2), rel=0.05)
    assert not conversion_delays(np.random.default_rng(0), 5, mean_hours=0.0).any()


def test_event_times_and_ab_report_reads_them(tmp_path: Path) -> None:
    assert event_times(T0, False, 60.0) == {"time": "2027-01-15T08:00:00.000Z"}
    converted = event_times(T0 + 0.25, True, 5400.0)
    assert converted == {
        "time": "2027-01-15T08:00:00.250Z",
        "conversion_time": "2027-01-15T09:30:00.250Z",
    }
    base = {"request_id": "r1", "position": 1, "click": 1, "conversion": 1}
    feedback = write(
        tmp_path / "f.jsonl",
        [{**base, "item_id": "i1", **converted}, {**base, "item_id": "i2", "time": T0}],
    )
    by_request, lines = read_feedback(feedback)
    assert lines == 2
    first, second = by_request["r1"]
    assert (first.time, first.conversion_time) == (T0 + 0.25, T0 + 5400.25)
    assert (second.time, second.conversion_time) == (T0, T0)  # conversion_time defaults to time
    write(feedback, [{**base, "item_id": "i1", "time": "yesterday"}])
    with pytest.raises(MtrankError, match=r"f.jsonl:1: 'time': expected an ISO-8601"):
        read_feedback(feedback)
