"""The records stored under entity keys and their layout, pinned byte for byte."""

from __future__ import annotations

from typing import Any

import pytest

from feature_store.errors import CorruptValue
from feature_store.records import Column, Layout, Record


def test_values_are_fixed_size_records_in_column_order_pinned_byte_for_byte() -> None:
    record = Record(
        (
            Column("price", "numeric"),
            Column("cat", "categorical", width=3),
            Column("seq", "sequence", width=2, length=3),
            Column("age", "numeric"),
        )
    )
    [blob] = record.encode([{"seq": ["a", "", "bc"], "price": 1.5, "cat": "7"}])
    assert blob == (
        b"\x00\x00\xc0\x3f"  # float32 1.5, little-endian, first: the order of the columns
        b"7\x00\x00"  # UTF-8, NUL-padded to the width
        b"a\x00bc\x00\x00"  # non-empty elements first, then "" (all NUL)
        b"\x00\x00\xc0\x7f"  # NaN: "age" is missing
    )
    assert record.size == len(blob) == 4 + 3 + 6 + 4
    keys = [b"k1", b"k2"]
    rows = record.decode([blob, None], keys)
    assert [record.values(row) for row in rows] == [
        {"price": 1.5, "cat": "7", "seq": ["a", "bc"]},
        {},  # no such key: every value missing
    ]
    assert rows["cat"].tolist() == [b"7", b""]
    assert rows["seq"].tolist() == [[b"a", b"bc", b""], [b"", b"", b""]]


def test_the_record_is_inferred_from_rows_as_the_smallest_that_holds_them() -> None:
    rows = [{"cat": "caf\u00e9", "n": 1}, {"seq": ["x", "", "yz"], "n": 2.5}, {"cat": None}]
    assert Record.infer(rows) == Record(
        (
            Column("cat", "categorical", width=5),  # UTF-8 bytes, not characters
            Column("n", "numeric"),
            Column("seq", "sequence", width=2, length=2),
        )
    )
    with pytest.raises(ValueError, match="feature 'n' has numeric and categorical values"):
        Record.infer([{"n": 1.0}, {"n": "1"}])


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"price": 1.0, "size": 2.0}, r"features \['size'\] are not among the columns"),
        ({"cat": "abcd"}, "'abcd' takes 4 bytes, more than the 3 its records hold"),
        ({"cat": "a\x00"}, "contains NUL"),
        ({"cat": 7}, "column 'cat' holds strings, got 7"),
        ({"price": "1"}, "column 'price' is numeric, got '1'"),
        ({"seq": ["a", "b", "c"]}, "column 'seq' holds 2 elements, got 3"),
        ({"seq": "ab"}, "column 'seq' holds lists of strings"),
    ],
)
def test_a_row_the_record_cannot_hold_is_refused_naming_the_column(
    row: dict[str, Any], message: str
) -> None:
    record = Record(
        (
            Column("price", "numeric"),
            Column("cat", "categorical", width=3),
            Column("seq", "sequence", width=1, length=2),
        )
    )
    with pytest.raises(ValueError, match=message):
        record.encode([row])


def test_columns_need_the_sizes_of_their_type() -> None:
    with pytest.raises(ValueError, match="a categorical column needs a width >= 1"):
        Column("cat", "categorical")
    with pytest.raises(ValueError, match="a sequence column needs a width >= 1 and a length"):
        Column("seq", "sequence", width=2)
    with pytest.raises(ValueError, match="a numeric column needs no width"):
        Column("n", "numeric", width=4)


def test_numbers_come_back_at_float32_precision() -> None:
    record = Record((Column("x", "numeric"),))
    [row] = record.decode(record.encode([{"x": 0.1}]), [b"k"])
    assert record.values(row)["x"] != 0.1
    assert record.values(row)["x"] == pytest.approx(0.1, rel=1e-7)


@pytest.mark.parametrize("n", [0, 1, 500])
def test_records_are_decoded_in_order_with_missing_values_where_absent(n: int) -> None:
    record = Record((Column("a", "numeric"), Column("b", "categorical", width=2)))
    blobs = [None if i % 3 == 1 else record.encode([{"a": float(i % 7)}])[0] for i in range(n)]
    keys = [f"k{i}".encode() for i in range(n)]
    rows = record.decode(blobs, keys)
    assert [record.values(row) for row in rows] == [
        {} if i % 3 == 1 else {"a": float(i % 7)} for i in range(n)
    ]


@pytest.mark.parametrize(
    ("blob", "size"),
    [
        (b"\x00\x00\x80\x3f\x61", 5),  # one byte short
        (b"\x00\x00\x80\x3f\x61\x00\x00", 7),  # one byte more: would shift the rest if joined
        (b"", 0),
        (b"\x92\x01\x02", 3),  # a msgpack array: written by an older mtrank
    ],
)
def test_a_value_of_another_size_among_many_is_named_not_its_neighbours(
    blob: bytes, size: int
) -> None:
    record = Record((Column("a", "numeric"), Column("b", "categorical", width=2)))
    [good] = record.encode([{"a": 1.0}])
    blobs: list[bytes | None] = [good] * 500
    blobs[250] = None
    blobs[321] = blob
    keys = [f"mtrank:v1:item:{i}".encode() for i in range(500)]
    message = f"'mtrank:v1:item:321' is {size} bytes, not a record of this version \\(6 bytes: a, b"
    with pytest.raises(CorruptValue, match=message):
        record.decode(blobs, keys)


def test_a_record_of_no_columns_is_empty() -> None:
    record = Record()
    assert record.size == 0
    assert len(record.decode([b"", None], [b"k1", b"k2"])) == 2


def test_the_record_layout_is_read_from_the_meta_record() -> None:
    meta = (
        b'{"columns": {"item": [{"name": "price", "type": "numeric"}, '
        b'{"name": "cat", "type": "categorical", "width": 4}], "user": []}, "version": 7}'
    )
    item = Record((Column("price", "numeric"), Column("cat", "categorical", width=4)))
    assert Layout.from_meta(meta, b"mtrank:v7:meta") == Layout(user=Record(), item=item)
    assert Layout(item=item).to_record() == {
        "user": [],
        "item": [
            {"name": "price", "type": "numeric"},
            {"name": "cat", "type": "categorical", "width": 4},
        ],
    }
    with pytest.raises(CorruptValue, match="'mtrank:v7:meta' is missing"):
        Layout.from_meta(None, b"mtrank:v7:meta")
    with pytest.raises(CorruptValue, match="'mtrank:v7:meta' has no record layout"):
        Layout.from_meta(b'{"format": 2, "entities": {}}', b"mtrank:v7:meta")
    with pytest.raises(CorruptValue, match="written by an older mtrank"):  # format 3: names only
        Layout.from_meta(b'{"columns": {"item": ["price"], "user": []}}', b"mtrank:v7:meta")
