"""The training readers: batch contents, joins and fills, formats, shuffling, sharding, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ranker.schema import Schema
from training.data import (
    DataError,
    ReadOptions,
    make_dataset,
    read_arrays,
    read_columns,
    read_tensors,
    reader_errors,
    write_tfrecord,
)

SCHEMA = Schema.from_dict(
    {
        "features": [
            {"name": "user_id", "type": "categorical", "entity": "user", "num_buckets": 100},
            {"name": "age", "type": "categorical", "entity": "user", "vocabulary": ["y", "o"]},
            {"name": "recent", "type": "sequence", "entity": "user", "max_length": 3,
             "shared_embedding": "item_id"},
            {"name": "item_id", "type": "categorical", "entity": "item", "num_buckets": 100},
            {"name": "price", "type": "numeric", "entity": "item", "default": 9.5},
            {"name": "device", "type": "categorical", "entity": "context",
             "vocabulary": ["ios", "web"]},
            {"name": "position", "type": "numeric", "entity": "context"},
        ],
        "tasks": [
            {"name": "ctr", "label": "click"},
            {"name": "cvr", "label": "conversion", "condition": "click"},
        ],
        "products": [{"name": "ctcvr", "of": ["ctr", "cvr"]}],
    }
)  # fmt: skip

USERS = {"user_id": [1, 2], "age": ["y", None], "recent": [[10, 11, 12, 13], []]}
ITEMS = {"item_id": [10, 11], "price": [1.0, None]}
IMPRESSIONS = {
    "user_id": [1, 2, 3, 1, 2],  # user 3 is in no table
    "item_id": [10, 11, 10, 99, 11],  # item 99 is in no table
    "device": ["ios", "web", None, "ios", "web"],
    "position": [1.0, float("nan"), 3.0, 4.0, 5.0],
    "click": [1, 0, 1, 0, 1],
    "conversion": [1, 0, 0, 0, 1],
    "p_click": [0.5] * 5,
}


def _write(directory: Path, impressions: dict[str, list], name: str = "train.parquet") -> Path:
    pq.write_table(pa.table(USERS), directory / "users.parquet")
    pq.write_table(pa.table(ITEMS), directory / "items.parquet")
    path = directory / name
    pq.write_table(pa.table(impressions), path)
    return path


@pytest.fixture
def train(tmp_path: Path) -> Path:
    return _write(tmp_path, IMPRESSIONS)


def _rows(features: dict[str, np.ndarray]) -> list[tuple]:
    """Rows as hashable tuples, to compare datasets regardless of order."""
    names = sorted(features)
    count = len(features[names[0]])
    return sorted(
        tuple(tuple(features[n][i]) if features[n].ndim > 1 else features[n][i] for n in names)
        for i in range(count)
    )


def test_batch_holds_every_feature_in_model_form_with_joins_and_fills(train: Path) -> None:
    features, labels = read_arrays(train, SCHEMA)
    assert list(features) == SCHEMA.feature_names
    assert features["user_id"].tolist() == [b"1", b"2", b"3", b"1", b"2"]  # str() of the int
    assert features["age"].tolist() == [b"y", b"", b"", b"y", b""]  # null and unknown user: ""
    assert features["recent"].tolist()[0] == [b"10", b"11", b"12"]  # truncated, first kept
    assert features["recent"].tolist()[1] == [b"", b"", b""]  # empty list: padded
    assert features["recent"].tolist()[2] == [b"", b"", b""]  # unknown user: padded
    assert features["price"].tolist() == [1.0, 9.5, 1.0, 9.5, 9.5]  # null, unknown item: default
    assert features["device"].tolist() == [b"ios", b"web", b"", b"ios", b"web"]
    assert features["position"].tolist() == [1.0, 0.0, 3.0, 4.0, 5.0]  # NaN: 0.0
    assert features["price"].dtype == np.float32 and features["recent"].shape == (5, 3)
    assert labels["click"].tolist() == [1, 0, 1, 0, 1] and labels["click"].dtype == np.float32
    assert list(labels) == ["click", "conversion"]


def test_batches_have_static_dtypes_and_size_and_keep_the_remainder(train: Path) -> None:
    dataset = make_dataset(train, SCHEMA, ReadOptions(batch_size=2))
    sizes = [int(labels["click"].shape[0]) for _, labels in dataset]
    assert sizes == [2, 2, 1]
    features, labels = dataset.element_spec
    assert features["recent"].shape.as_list() == [None, 3]
    assert features["user_id"].dtype.name == "string" and labels["click"].dtype.name == "float32"
    dropped = make_dataset(train, SCHEMA, ReadOptions(batch_size=2, drop_remainder=True))
    assert [int(f["position"].shape[0]) for f, _ in dropped] == [2, 2]


def test_denormalized_file_needs_no_entity_tables(tmp_path: Path) -> None:
    train = _write(tmp_path, IMPRESSIONS)
    features, _ = read_arrays(train, SCHEMA)
    denormalized = {name: values.tolist() for name, values in features.items()}
    denormalized["age"] = ["o"] * 5  # a column of the file wins over the table
    denormalized |= {"click": IMPRESSIONS["click"], "conversion": IMPRESSIONS["conversion"]}
    alone = tmp_path / "alone"
    alone.mkdir()
    path = alone / "flat.parquet"
    pq.write_table(pa.table(denormalized), path)
    read, _ = read_arrays(path, SCHEMA)
    assert read["age"].tolist() == [b"o"] * 5
    assert read["recent"].tolist() == features["recent"].tolist()


def test_labels_false_yields_features_only(train: Path) -> None:
    element = next(iter(make_dataset(train, SCHEMA, ReadOptions(labels=False))))
    assert set(element) == set(SCHEMA.feature_names)


def test_csv_reads_the_same_as_parquet_with_pipe_separated_sequences(tmp_path: Path) -> None:
    train = _write(tmp_path, IMPRESSIONS)
    parquet_features, parquet_labels = read_arrays(train, SCHEMA)
    flat = {name: values.tolist() for name, values in parquet_features.items()}
    flat["recent"] = ["|".join(v.decode() for v in row if v) for row in parquet_features["recent"]]
    flat = {k: [v.decode() if isinstance(v, bytes) else v for v in vs] for k, vs in flat.items()}
    flat["position"] = ["1.0", "", "3.0", "4.0", "5.0"]  # empty numeric: filled
    lines = [",".join([*flat, "click", "conversion"])]
    for i in range(5):
        row = [str(flat[name][i]) for name in flat] + [str(IMPRESSIONS["click"][i]), "0"]
        lines.append(",".join(row))
    path = tmp_path / "train.csv"
    path.write_text("\n".join(lines) + "\n")
    features, labels = read_arrays(path, SCHEMA)
    assert _rows(features) == _rows(parquet_features)
    assert labels["click"].tolist() == parquet_labels["click"].tolist()


def test_tfrecord_written_from_parquet_reads_back_the_same(train: Path, tmp_path: Path) -> None:
    path = tmp_path / "train.tfrecord"
    assert write_tfrecord(train, path, SCHEMA) == 5
    expected_features, expected_labels = read_arrays(train, SCHEMA)
    features, labels = read_arrays(path, SCHEMA)
    for name in SCHEMA.feature_names:
        assert features[name].tolist() == expected_features[name].tolist(), name
    assert labels["conversion"].tolist() == expected_labels["conversion"].tolist()


def _many_rows(directory: Path, count: int, row_group_size: int) -> Path:
    rows = {
        "user_id": list(range(count)),
        "item_id": [10] * count,
        "device": ["ios"] * count,
        "position": list(range(count)),  # an integer column feeds a numeric feature
        "click": [i % 2 for i in range(count)],
        "conversion": [0] * count,
    }
    pq.write_table(pa.table(USERS), directory / "users.parquet")
    pq.write_table(pa.table(ITEMS), directory / "items.parquet")
    path = directory / "many.parquet"
    pq.write_table(pa.table(rows), path, row_group_size=row_group_size)
    return path


def _positions(path: Path, options: ReadOptions) -> list[float]:
    dataset = make_dataset(path, SCHEMA, options)
    return [p for features, _ in dataset for p in features["position"].numpy().tolist()]


@pytest.mark.parametrize("row_group_size", [7, 1000])
def test_shards_are_disjoint_and_cover_the_file(tmp_path: Path, row_group_size: int) -> None:
    path = _many_rows(tmp_path, 100, row_group_size)
    shards = [_positions(path, ReadOptions(num_shards=3, shard_index=i)) for i in range(3)]
    assert sorted(p for shard in shards for p in shard) == list(range(100))
    assert all(30 <= len(shard) <= 34 for shard in shards)


def test_tfrecord_shards_are_disjoint_and_cover_the_file(tmp_path: Path) -> None:
    path = tmp_path / "many.tfrecord"
    write_tfrecord(_many_rows(tmp_path, 20, 20), path, SCHEMA)
    shards = [_positions(path, ReadOptions(num_shards=2, shard_index=i)) for i in range(2)]
    assert sorted(shards[0] + shards[1]) == list(range(20)) and len(shards[0]) == 10


def test_shuffle_permutes_rows_reproducibly_and_differently_each_epoch(tmp_path: Path) -> None:
    path = _many_rows(tmp_path, 200, 50)
    options = ReadOptions(batch_size=16, shuffle=True, shuffle_buffer=64, seed=7, chunk_rows=32)
    first = _positions(path, options)
    assert sorted(first) == list(range(200)) and first != sorted(first)
    assert _positions(path, options) == first  # same seed, same order
    epochs = make_dataset(path, SCHEMA, options)
    one = [p for f, _ in epochs for p in f["position"].numpy().tolist()]
    two = [p for f, _ in epochs for p in f["position"].numpy().tolist()]
    assert sorted(one) == sorted(two) and one != two  # a new order each epoch
    one_group = _many_rows(tmp_path, 200, 1000)  # rows permuted inside a piece, not just pieces
    assert _positions(one_group, options) != list(range(200))


def test_repeat_goes_on_past_the_end(train: Path) -> None:
    dataset = make_dataset(train, SCHEMA, ReadOptions(batch_size=5, repeat=True))
    assert len(list(dataset.take(3))) == 3


def test_read_tensors_and_columns(train: Path) -> None:
    features, labels = read_tensors(train, SCHEMA, labels=False)
    assert labels == {} and features["recent"].shape == (5, 3)
    columns = read_columns(train, ["user_id", "p_click"])
    assert columns["user_id"].tolist() == [1, 2, 3, 1, 2] and columns["p_click"][0] == 0.5


# ---- errors: one line naming file and column ------------------------------------------------


def _read(path: Path) -> None:
    with reader_errors():
        list(make_dataset(path, SCHEMA, ReadOptions(batch_size=2)))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"device": None}, r"train.parquet: column 'device' is missing"),
        ({"click": None}, r"train.parquet: column 'click' is missing \(label\)"),
        ({"position": ["a", "b", "c", "d", "e"]}, r"column 'position' has type string"),
        ({"click": ["1", "0", "1", "0", "1"]}, r"label column 'click' has type string"),
        ({"device": [1.5] * 5}, r"column 'device' has type double"),
        ({"click": [1, 0, 2, 0, 1]}, r"train.parquet: label column 'click' has value 2"),
        ({"conversion": [1.0, None, 0, 0, 0]}, r"label column 'conversion' has a null or NaN"),
        ({"conversion": [1.0, float("nan"), 0, 0, 0]}, r"label column 'conversion'"),
    ],
)
def test_bad_input_is_one_line_naming_file_and_column(
    tmp_path: Path, change: dict[str, list | None], message: str
) -> None:
    rows = {k: v for k, v in (IMPRESSIONS | change).items() if v is not None}
    path = _write(tmp_path, rows)
    with pytest.raises(DataError, match=message) as caught:
        _read(path)
    assert "\n" not in str(caught.value)


def test_a_missing_key_or_table_is_named(tmp_path: Path) -> None:
    rows = {k: v for k, v in IMPRESSIONS.items() if k != "item_id"}
    with pytest.raises(DataError, match=r"column 'item_id' is missing \(item key"):
        _read(_write(tmp_path, rows))
    train = _write(tmp_path, IMPRESSIONS)
    (tmp_path / "items.parquet").unlink()
    with pytest.raises(DataError, match=r"items.parquet: no such entity table"):
        read_arrays(train, SCHEMA)


def test_empty_files_are_errors(tmp_path: Path) -> None:
    empty = _write(tmp_path, {k: v[:0] for k, v in IMPRESSIONS.items()})
    with pytest.raises(DataError, match=r"train.parquet: the file has no rows"):
        _read(empty)
    header_only = tmp_path / "train.csv"
    header_only.write_text(",".join(IMPRESSIONS) + "\n")
    with pytest.raises(DataError, match=r"train.csv: the file has no rows"):
        _read(header_only)
    (tmp_path / "none.tfrecord").write_bytes(b"")
    with pytest.raises(DataError, match=r"none.tfrecord: the file has no rows"):
        _read(tmp_path / "none.tfrecord")


def test_a_string_in_a_numeric_csv_column_is_named(tmp_path: Path) -> None:
    _write(tmp_path, IMPRESSIONS)
    path = tmp_path / "train.csv"
    header = "user_id,item_id,device,position,click,conversion"
    path.write_text(f"{header}\n1,10,ios,1.0,1,0\n2,11,web,high,0,0\n")
    with pytest.raises(DataError, match=r"train.csv: column 'position' has a value of the wrong"):
        _read(path)


def test_a_bad_tfrecord_label_is_named(train: Path, tmp_path: Path) -> None:
    from ranker.keras_compat import tf

    good, bad = tmp_path / "good.tfrecord", tmp_path / "bad.tfrecord"
    write_tfrecord(train, good, SCHEMA)
    with tf.io.TFRecordWriter(str(bad)) as writer:
        for record in tf.data.TFRecordDataset(str(good)):
            example = tf.train.Example.FromString(record.numpy())
            example.features.feature["click"].float_list.value[:] = [2.0]
            writer.write(example.SerializeToString())
    with pytest.raises(DataError, match=r"bad.tfrecord: label column 'click' has a value outside"):
        _read(bad)


def test_an_unknown_suffix_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"unknown data format '.txt'"):
        make_dataset(tmp_path / "x.txt", SCHEMA)
