"""Export a trained RankingModel as a SavedModel that takes raw features and returns named scores.

The `serving_default` signature takes one tensor per raw feature and returns one 1-D `float32`
tensor per task and product, as `ranker.contract` (the export contract) says; metadata.json beside
it is that contract's `ExportMetadata`. With a calibration (`training.calibration`, what `mtrank
train` fits on the validation split), those scores are the calibrated ones and the model's own
scores come beside them as `raw_<name>`; the calibrator is float32 constants in the traced
function. Only the model's variables are saved (no optimizer slots), and the result loads with
plain TensorFlow: no mtrank, no TFRS.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from ranker.contract import (
    SIGNATURE,
    ExportCalibration,
    ExportMetadata,
    TrainingSummary,
    raw_output,
    signature_inputs,
)
from ranker.errors import MtrankError
from ranker.keras_compat import tf
from ranker.model import RankingModel
from ranker.schema import Schema
from training.calibration import export_outputs


def signature_specs(schema: Schema) -> dict[str, tf.TensorSpec]:
    """The serving signature's tensor specs, one per raw feature (`ranker.contract`)."""
    return {
        name: tf.TensorSpec(spec.shape, tf.as_dtype(spec.dtype), name=name)
        for name, spec in signature_inputs(schema).items()
    }


class _Servable(tf.Module):
    """Tracks only the layers inference uses, so optimizer slots, metrics and loss weights stay out."""

    def __init__(self, model: RankingModel) -> None:
        super().__init__(name="mtrank_servable")
        self.layers = model.inference_layers()


def export_saved_model(
    model: RankingModel, path: str | Path, calibration: ExportCalibration | None = None
) -> Path:
    """Writes the SavedModel to `path` (a new or empty directory) and returns it; with a
    `calibration`, the signature returns the calibrated scores and the raw ones (`raw_<name>`)."""
    path = Path(path)
    schema = model.schema
    output_names = list(schema.output_names)
    clashes = [name for name in output_names if raw_output(name) in output_names]
    if calibration is not None and clashes:
        raise MtrankError(
            f"schema: output {raw_output(clashes[0])!r} has the name the export gives the raw "
            f"score of {clashes[0]!r}; rename it"
        )

    def serve(features: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        scores = model(features, training=False)
        if calibration is not None:
            return export_outputs(calibration, schema, scores)
        return {name: tf.cast(scores[name], tf.float32) for name in output_names}

    signature = tf.function(serve, input_signature=[signature_specs(model.schema)])
    servable = _Servable(model)
    tf.saved_model.save(
        servable, str(path), signatures={SIGNATURE: signature.get_concrete_function()}
    )
    return path


# ---- versioned exports -------------------------------------------------------------------------


def resolve_version(path: Path) -> Path:
    """MODELS/NAME/VERSION as given, or the highest numeric version under MODELS/NAME."""
    if (path / "saved_model.pb").exists():
        return path
    versions = sorted(
        (int(p.name), p)
        for p in path.glob("*")
        if p.name.isdigit() and (p / "saved_model.pb").exists()
    )
    if not versions:
        raise MtrankError(
            f"{path}: no exported model (expected saved_model.pb here or in a numeric version folder)"
        )
    return versions[-1][1]


def next_version(model_dir: Path) -> int:
    """One higher than the largest numeric version directory already in `model_dir` (1 if none)."""
    versions = [int(p.name) for p in model_dir.glob("*") if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def fingerprint(paths: Iterable[Path]) -> str:
    """sha256 over the training files' names and contents: which data a model was trained on."""
    digest = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def write_version(
    model: RankingModel,
    model_dir: Path,
    training: TrainingSummary,
    data_files: Iterable[Path],
    is_chief: bool = True,
) -> tuple[int, Path]:
    """Exports the model as MODEL_DIR/VERSION with metadata.json, appearing atomically.

    The SavedModel is written to a hidden temporary directory and renamed into place, so a server
    polling MODEL_DIR never sees a half-written version. Non-chief workers of a multi-worker job
    must take part in saving, so they write to a temporary directory that is then removed.
    """
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=model_dir))
    try:
        export_saved_model(model, staging / "model", training.calibration)
        if not is_chief:
            return 0, staging
        version = next_version(model_dir)
        metadata = ExportMetadata(
            name=model_dir.name,
            version=version,
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            schema=model.schema.to_dict(),
            outputs=model.schema.output_names,
            inputs=signature_inputs(model.schema),
            signature=SIGNATURE,
            data_fingerprint=fingerprint(data_files),
            versions=_versions(),
            # the calibration as fitted: only the fields its method has, no nulls for the others
            **training.model_dump(exclude={"calibration"}),
            calibration=training.calibration,
        )
        metadata.write(staging / "model")
        target = model_dir / str(version)
        (staging / "model").rename(target)
        return version, target
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _versions() -> dict[str, str]:
    import tensorflow_recommenders as tfrs

    from ranker import __version__

    return {
        "mtrank": __version__,
        "tensorflow": tf.__version__,
        "tensorflow_recommenders": tfrs.__version__,
    }
