"""The export contract (`ranker.contract`): the signature-input rule and metadata.json's errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ranker.contract import (
    ExportMetadata,
    MetadataInvalid,
    MetadataMissing,
    MetadataUnreadable,
    signature_input,
    signature_inputs,
)
from ranker.schema import Feature
from tests.ranker.conftest import click_log_schema

OLD_EXPORT = Path(__file__).resolve().parents[1] / "fixtures" / "export_2026_12_05"


def test_each_feature_type_has_one_signature_input() -> None:
    def of(**raw: object) -> tuple[str, list[int | None]]:
        spec = signature_input(Feature.model_validate({"name": "f", "entity": "item", **raw}))
        return spec.dtype, spec.shape

    assert of(type="numeric") == ("float32", [None])
    assert of(type="categorical", num_buckets=8) == ("string", [None])
    assert of(type="sequence", max_length=3, num_buckets=8) == ("string", [None, None])
    schema = click_log_schema()
    assert list(signature_inputs(schema)) == [f.name for f in schema.features]


@pytest.fixture
def version(tmp_path: Path) -> Path:
    return Path(shutil.copytree(OLD_EXPORT / "shared_bottom" / "1", tmp_path / "1"))


def _edit(version: Path, **changes: object) -> None:
    path = version / "metadata.json"
    raw = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            del raw[key]
        else:
            raw[key] = value
    path.write_text(json.dumps(raw))


def test_a_missing_field_is_one_line_naming_it(version: Path) -> None:
    _edit(version, outputs=None)
    with pytest.raises(MetadataInvalid, match=r"metadata.json: outputs: required key is missing$"):
        ExportMetadata.read(version)


def test_an_unknown_field_is_an_error_not_ignored(version: Path) -> None:
    _edit(version, ouputs=["ctr"])
    with pytest.raises(MetadataInvalid, match=r"metadata.json: ouputs: unknown key$"):
        ExportMetadata.read(version)


def test_a_wrong_input_dtype_is_named(version: Path) -> None:
    _edit(version, inputs={"price": {"dtype": "int64", "shape": [None]}})
    with pytest.raises(MetadataInvalid, match=r"inputs.price.dtype: .*'int64'"):
        ExportMetadata.read(version)


def test_missing_and_unreadable_files_are_told_apart(version: Path) -> None:
    (version / "metadata.json").write_text("{not json")
    with pytest.raises(MetadataUnreadable, match=r"metadata\.json: unreadable"):
        ExportMetadata.read(version)
    (version / "metadata.json").unlink()
    with pytest.raises(MetadataMissing, match=r"no metadata\.json"):
        ExportMetadata.read(version)
