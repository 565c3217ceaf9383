"""What `mtrank synth` must guarantee: deterministic tables, valid labels, realistic rates, a time
split, a loadable schema, and a true model that reproduces the stored probabilities."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ranker.errors import MtrankError
from ranker.schema import Schema
from training.cli import main
from training.synth import (
    CATEGORIES,
    MAX_RECENT,
    SynthConfig,
    TrueModel,
    build_true_model,
    draw_impressions,
    generate,
)

SMALL = SynthConfig(rows=4_000, users=300, items=200, seed=7)
FILES = ("users", "items", "train", "val", "test")


def _read(out: Path, name: str) -> pa.Table:
    return pq.read_table(out / f"{name}.parquet")


def _all_rows(out: Path) -> pa.Table:
    return pa.concat_tables([_read(out, s) for s in ("train", "val", "test")])


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate(SMALL, out)
    return out


def test_same_seed_same_tables_other_seed_other_tables(data: Path, tmp_path: Path) -> None:
    generate(SMALL, tmp_path / "again")
    generate(SynthConfig(rows=4_000, users=300, items=200, seed=8), tmp_path / "other")
    for name in FILES:
        assert _read(tmp_path / "again", name).equals(_read(data, name)), name
    assert not _read(tmp_path / "other", "train").equals(_read(data, "train"))
    assert not _read(tmp_path / "other", "users").equals(_read(data, "users"))


def test_columns_and_types(data: Path) -> None:
    rows = _read(data, "train")
    assert rows.schema.field("user_id").type == pa.string()
    assert rows.schema.field("timestamp").type == pa.int64()
    for label in ("click", "conversion"):
        assert rows.schema.field(label).type == pa.int8()
    for p in ("p_click", "p_conversion"):
        assert rows.schema.field(p).type == pa.float32()
    users, items = _read(data, "users"), _read(data, "items")
    assert users.column_names == [
        "user_id", "age_bucket", "gender", "country", "activity", "recent_items",
    ]  # fmt: skip
    assert items.column_names == ["item_id", "category", "brand", "price", "popularity"]
    assert users.num_rows == SMALL.users and items.num_rows == SMALL.items
    assert sum(_read(data, s).num_rows for s in ("train", "val", "test")) == SMALL.rows


def test_labels_are_binary_and_conversion_needs_a_click(data: Path) -> None:
    rows = _all_rows(data)
    click = rows.column("click").to_numpy()
    conversion = rows.column("conversion").to_numpy()
    assert set(np.unique(click)) <= {0, 1} and set(np.unique(conversion)) <= {0, 1}
    assert np.all(conversion <= click)
    assert conversion.sum() > 0  # conversions exist, and only on clicks
    for p in ("p_click", "p_conversion"):
        values = rows.column(p).to_numpy()
        assert np.all((values > 0) & (values < 1)), p


@pytest.mark.parametrize(
    "config",
    [SynthConfig(users=300, items=200, seed=1), SynthConfig(users=5_000, items=50, seed=2)],
    ids=["small-world", "many-users-few-items"],
)
def test_rates_are_near_industry_logs_for_any_seed_and_size(config: SynthConfig) -> None:
    model = build_true_model(config)
    imp = draw_impressions(model, 20_000, np.random.default_rng(0))
    p_click = 1 / (
        1 + np.exp(-model.click_logit(imp.user, imp.item, imp.device, imp.hour, imp.position))
    )
    p_conv = 1 / (1 + np.exp(-model.conversion_logit(imp.user, imp.item, imp.device)))
    assert 0.04 <= p_click.mean() <= 0.06
    assert 0.05 <= (p_click * p_conv).sum() / p_click.sum() <= 0.10


def test_observed_rates_and_skewed_frequencies(data: Path) -> None:
    rows = _all_rows(data)
    click = rows.column("click").to_numpy()
    conversion = rows.column("conversion").to_numpy()
    assert 0.03 <= click.mean() <= 0.07
    assert 0.02 <= conversion.sum() / click.sum() <= 0.16
    per_item = np.unique(rows.column("item_id").to_numpy(zero_copy_only=False), return_counts=True)[
        1
    ]
    assert per_item.max() > 5 * np.median(per_item)  # popular items dominate impressions


def test_split_is_by_time(data: Path) -> None:
    ts = {s: _read(data, s).column("timestamp").to_numpy() for s in ("train", "val", "test")}
    assert ts["train"].max() <= ts["val"].min() <= ts["val"].max() <= ts["test"].min()
    for part in ts.values():
        assert np.all(np.diff(part) >= 0)
    span = ts["test"].max() - ts["train"].min()
    assert ts["val"].min() - ts["train"].min() == pytest.approx(0.8 * span, rel=0.02)
    assert 0.7 <= len(ts["train"]) / SMALL.rows <= 0.9


def test_context_values(data: Path) -> None:
    rows = _all_rows(data)
    hour, position = rows.column("hour").to_numpy(), rows.column("position").to_numpy()
    assert set(np.unique(rows.column("device").to_numpy(zero_copy_only=False))) == {
        "ios",
        "android",
        "web",
    }
    assert hour.min() >= 0 and hour.max() <= 23
    assert np.array_equal(hour, (rows.column("timestamp").to_numpy() // 3600) % 24)
    assert position.min() >= 1 and position.max() <= 20
    assert np.mean(position <= 5) > np.mean(position > 15)  # top slots shown more often


def test_users_and_items_tables(data: Path) -> None:
    users, items = _read(data, "users"), _read(data, "items")
    recent = users.column("recent_items").to_pylist()
    item_ids = set(items.column("item_id").to_pylist())
    assert max(len(r) for r in recent) <= MAX_RECENT
    assert all(i in item_ids for r in recent for i in r)
    assert np.all(users.column("activity").to_numpy() > 0)
    brand_to_category = dict(
        zip(items.column("brand").to_pylist(), items.column("category").to_pylist(), strict=True)
    )
    assert all(brand.rsplit("_", 1)[0] == category for brand, category in brand_to_category.items())
    assert set(items.column("category").to_pylist()) <= set(CATEGORIES)
    assert np.all(items.column("popularity").to_numpy() >= 0)


def test_recent_items_reveal_tastes(data: Path) -> None:
    """A user's recent items are concentrated on a few categories, far more than chance."""
    model = TrueModel.load(data)
    share = model.users.recent_share[
        model.users.recent_offsets[1:] - model.users.recent_offsets[:-1] >= 10
    ]
    popularity_share = np.bincount(
        model.items.category, weights=model.items.popularity, minlength=len(CATEGORIES)
    )
    assert share.max(axis=1).mean() > 1.5 * (popularity_share / popularity_share.sum()).max()


def test_schema_loads_back(data: Path) -> None:
    schema = Schema.load(data / "schema.yaml")
    assert schema.feature("user_id").num_buckets == 1024  # next power of two >= 2 * 300
    assert schema.feature("item_id").num_buckets == 512
    assert schema.feature("recent_items").shared_embedding == "item_id"
    assert schema.feature("hour").vocabulary == [str(h) for h in range(24)]
    assert schema.feature("position").default == 1.0
    assert schema.feature("price").transform == "log1p"
    assert [(t.name, t.label, t.condition) for t in schema.tasks] == [
        ("ctr", "click", None),
        ("cvr", "conversion", "click"),
    ]
    assert schema.output_names == ["ctr", "cvr", "ctcvr"]
    rows = _read(data, "test")
    assert not {"p_click", "p_conversion"} & set(schema.feature_names)
    context = {f.name for f in schema.entity_features("context")}
    assert context <= set(rows.column_names)


def test_true_model_reproduces_stored_probabilities(data: Path) -> None:
    model = TrueModel.load(data)
    rows = _read(data, "test")
    columns = {name: rows.column(name).to_numpy(zero_copy_only=False) for name in rows.column_names}
    p_click = model.p_click(
        columns["user_id"],
        columns["item_id"],
        columns["device"],
        columns["hour"],
        columns["position"],
    )
    p_conv = model.p_conversion(columns["user_id"], columns["item_id"], columns["device"])
    np.testing.assert_array_equal(p_click, columns["p_click"])
    np.testing.assert_array_equal(p_conv, columns["p_conversion"])


def test_true_model_scores_new_pairs(data: Path) -> None:
    model = TrueModel.load(data)
    users = [f"u{n}" for n in range(SMALL.users)]
    top = model.p_click(
        users, ["i3"] * len(users), ["web"] * len(users), [20] * len(users), [1] * len(users)
    )
    low = model.p_click(
        users, ["i3"] * len(users), ["web"] * len(users), [20] * len(users), [20] * len(users)
    )
    assert np.all(top > low)  # position bias
    assert np.unique(top).size > 10  # users differ
    with pytest.raises(MtrankError, match="user_id"):
        model.p_click(["u999999"], ["i0"], ["ios"], [0], [1])
    with pytest.raises(MtrankError, match="device"):
        model.p_conversion(["u0"], ["i0"], ["tv"])


def _logit(p: np.ndarray) -> np.ndarray:
    p = p.astype(np.float64)
    return np.log(p / (1 - p))


def test_relatedness_sets_how_alike_click_and_conversion_are(tmp_path: Path) -> None:
    correlation = {}
    for r in (0.0, 1.0):
        generate(
            SynthConfig(rows=3_000, users=300, items=200, seed=3, relatedness=r), tmp_path / str(r)
        )
        rows = _all_rows(tmp_path / str(r))
        p_click, p_conv = rows.column("p_click").to_numpy(), rows.column("p_conversion").to_numpy()
        correlation[r] = np.corrcoef(_logit(p_click), _logit(p_conv))[0, 1]
    assert correlation[1.0] > correlation[0.0] + 0.2


def test_cli_writes_everything_and_prints_a_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli"
    code = main(["synth", "--out", str(out), "--rows", "1500", "--users", "100", "--items", "60"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert sum(summary["rows"].values()) == 1500
    for name in (*FILES, "schema"):
        assert any(out.glob(f"{name}.*")), name
    assert (out / "truth.npz").is_file() and (out / "truth.json").is_file()


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--rows", "0"], "--rows"),
        (["--users", "0"], "--users"),
        (["--relatedness", "1.5"], "--relatedness"),
        (["--relatedness", "-0.1"], "--relatedness"),
    ],
)
def test_cli_bad_flags_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], named: str
) -> None:
    assert main(["synth", "--out", str(tmp_path / "x"), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mtrank synth: error:") and named in err[0]
    assert not (tmp_path / "x").exists()


def test_cli_out_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "file"
    target.write_text("not a directory")
    assert main(["synth", "--out", str(target), "--rows", "10"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--out" in err[0] and "is a file" in err[0]


def test_true_model_load_names_the_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MtrankError, match=r"truth\.npz"):
        TrueModel.load(tmp_path)
