"""The export contract: what training writes beside a SavedModel and serving reads back, typed once.

An export is `MODELS/NAME/VERSION/` with `saved_model.pb`, `variables/` and `metadata.json`, an
`ExportMetadata` as JSON. Its `serving_default` signature (`SIGNATURE`) takes one tensor per raw
feature of the schema, named as the feature, shaped by `signature_input`:

    categorical   string  [batch]           integers as their decimal strings
    numeric       float32 [batch]           NaN where missing
    sequence      string  [batch, length]   padded with "" (`SEQUENCE_PAD`)

and returns one float32 [batch] tensor per name of `outputs` (the schema's tasks, then its
products). An export of `mtrank train` returns those scores calibrated (`ExportCalibration`) and
also, under `raw_<name>` (`raw_output`), each output's score as the model computed it, before the
negative-sampling correction and the calibrator; serving returns only `outputs`.

Missing values (`Feature.missing_value`): "" for a categorical (out of vocabulary), NaN for a
numeric (the model fills in the feature's `default`), [] for a sequence. A sequence keeps its
first `max_length` non-empty elements, in order; the model reads no more than that.

Training writes it (`training.export.write_version`); serving parses it (`serving.servable`) and
checks the loaded signature against `inputs`. Pure Python: pydantic, no TensorFlow.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ranker.config_files import validate_mapping
from ranker.errors import MtrankError
from ranker.schema import Feature, Schema

SIGNATURE = "serving_default"
METADATA_FILE = "metadata.json"
SEQUENCE_PAD = ""
RAW_PREFIX = "raw_"


def raw_output(name: str) -> str:
    """The signature's name for an output's score before correction and calibration."""
    return f"{RAW_PREFIX}{name}"


class ContractError(MtrankError):
    """An export's metadata.json is missing, unreadable or not an `ExportMetadata`."""


class MetadataMissing(ContractError):
    pass


class MetadataUnreadable(ContractError):
    pass


class MetadataInvalid(ContractError):
    pass


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class SignatureInput(_Strict):
    """One input of the serving signature: its dtype name and shape (None: any size)."""

    dtype: Literal["string", "float32"]
    shape: list[int | None]

    @property
    def rank(self) -> int:
        return len(self.shape)


def signature_input(feature: Feature) -> SignatureInput:
    """The signature input of one raw feature (the table in the module docstring)."""
    if feature.type == "numeric":
        return SignatureInput(dtype="float32", shape=[None])
    if feature.type == "sequence":
        return SignatureInput(dtype="string", shape=[None, None])
    return SignatureInput(dtype="string", shape=[None])


def signature_inputs(schema: Schema) -> dict[str, SignatureInput]:
    """The signature's inputs for a schema, by feature name, in schema order."""
    return {feature.name: signature_input(feature) for feature in schema.features}


class CalibrationStats(_Strict):
    """One output's scores on one split: ECE (10 equal-frequency bins), calibration (mean score /
    observed rate) and AUC; None where undefined (no positives)."""

    ece: float | None
    calibration: float | None
    auc: float | None


class CalibrationCheck(_Strict):
    """An output's scores before (the model's raw score) and after (the exported score)."""

    before: CalibrationStats
    after: CalibrationStats


class TaskCalibration(_Strict):
    """How the export maps one output's raw score to the score it serves.

    `isotonic`: linear interpolation through the knots (`x` score, `y` rate), flat beyond the
    first and last; `platt`: sigmoid(a * logit(p) + b); `temperature`: sigmoid(logit(p) /
    temperature); `none`: unchanged (`reason` says why when the method was another);
    `product`: the product of its tasks' exported scores (`of`). `corrected`: the negative-
    sampling correction is applied first. `rows` and `positives`: the validation rows fitted on.
    """

    method: Literal["isotonic", "platt", "temperature", "none", "product"]
    reason: str | None = None
    corrected: bool = False
    rows: int | None = None
    positives: int | None = None
    knots: int | None = None
    x: list[float] | None = None
    y: list[float] | None = None
    a: float | None = None
    b: float | None = None
    temperature: float | None = None
    of: list[str] | None = None
    val: CalibrationCheck | None = None
    test: CalibrationCheck | None = None


class ExportCalibration(_Strict):
    """The calibration inside an export (`training.calibration`): the method asked for, the
    negative-sampling rate of train.parquet (the task it corrects says `corrected`) and, per served
    binary task and product, its `TaskCalibration`. Regression tasks are served as they are."""

    method: str
    negative_sampling_rate: float = Field(gt=0, le=1)
    tasks: dict[str, TaskCalibration] = Field(default_factory=dict)


class TrainingSummary(_Strict):
    """How an export was trained: the part of metadata.json that `mtrank train` fills in
    (`best_epoch` and `balancing` are absent from exports made before 2026-12-05)."""

    architecture: str
    train_config: dict[str, Any]
    hparams: dict[str, Any]
    test_metrics: dict[str, Any]
    data: dict[str, str]
    placement: str
    precision: str
    epochs_run: int = Field(ge=0)
    best_epoch: int | None = None
    # the balancing strategy and, per epoch, each objective's mean coefficient and each pair's
    # gradient cosine (training.task_balance); absent from exports made before 2026-12-05
    balancing: dict[str, Any] | None = None
    # `mtrank train --init-from`: the export it started from, what it copied, and that export's
    # test metrics (training.warm_start.WarmStart); absent otherwise
    init_from: dict[str, Any] | None = None
    # the calibrators the export applies and their figures before/after on val and test; absent
    # from exports made before 2026-12-06
    calibration: ExportCalibration | None = None


class ExportMetadata(TrainingSummary):
    """metadata.json: what serving needs to load and check the model (schema, outputs, inputs,
    signature), what the export is (name, version, created, the stack's versions, a fingerprint
    of its data) and how it was trained (`TrainingSummary`)."""

    name: str
    version: int = Field(ge=1)
    created: str
    schema_: dict[str, Any] = Field(alias="schema")
    outputs: list[str] = Field(min_length=1)
    inputs: dict[str, SignatureInput]
    signature: str = SIGNATURE
    data_fingerprint: str
    versions: dict[str, str]

    def model_schema(self, source: str = METADATA_FILE) -> Schema:
        """The schema the model was trained on (SchemaError naming `source` if it is not one)."""
        return Schema.from_dict(self.schema_, source=f"{source}: schema")

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", by_alias=True, exclude_unset=True), indent=2)

    def write(self, directory: Path) -> Path:
        path = Path(directory) / METADATA_FILE
        path.write_text(self.to_json())
        return path

    @classmethod
    def read(cls, directory: Path) -> ExportMetadata:
        """DIR/metadata.json parsed; a ContractError of one line names the file and the field."""
        path = Path(directory) / METADATA_FILE
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise MetadataMissing(f"{directory}: no {METADATA_FILE}") from None
        except (OSError, ValueError) as err:
            raise MetadataUnreadable(f"{path}: unreadable: {err}") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("schema"), dict):
            raise MetadataInvalid(f"{path}: no 'schema' mapping")
        return validate_mapping(cls, raw, str(path), MetadataInvalid, "a JSON object")
