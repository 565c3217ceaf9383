"""Warm start from a trained export: `mtrank train --init-from MODELS/NAME[/VERSION]`.

Adding a task to a trained model, as MT-DNN ("Multi-Task Deep Neural Networks for Natural
Language Understanding", Liu et al., ACL 2019) fine-tunes a shared encoder for new tasks and ERNIE
2.0 ("ERNIE 2.0: A Continual Pre-training Framework for Language Understanding", Sun et al., AAAI
2020) adds tasks to a trained model: the new model starts from every weight the export has for it
and trains its new parts (a new task's tower, its gate) from their initialisation, fine-tuning
the rest.

Which weight is which: the export's variables are read back into a model built from its
metadata.json (the architecture, hyperparameters and schema it was trained with), whose parts are
then matched to the new model's by what they are, not by position in the export: the feature
inputs, the cross layers and the backbone as they are (a backbone's per-task lists, MMoE's gates
or PLE's task experts, grow at the end), and each task's tower by the task's name. A weight whose
shape differs (another vocabulary, another expert width) is an error naming it; so is another
architecture, another hyperparameter or another feature (the embedding tables serve every task).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ranker.contract import METADATA_FILE, ExportMetadata
from ranker.errors import MtrankError
from ranker.keras_compat import tf
from ranker.model import RankingModel
from ranker.schema import Schema
from training.export import resolve_version

SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"


class IncompatibleInit(MtrankError):
    """`--init-from` names an export this model cannot start from; the message says why."""


@dataclass(frozen=True)
class WarmStart:
    """What a warm start did: the export it read, how many variables it copied, the new model's
    variables it left at their initialisation (by checkpoint key), and the export's own test
    metrics (the old tasks' figures before the new training)."""

    source: Path
    copied: int
    fresh: list[str] = field(default_factory=list)
    test_before: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        new = f": {', '.join(self.fresh[:6])}{', ...' if len(self.fresh) > 6 else ''}"
        return (
            f"warm start from {self.source}: {self.copied} variables copied, "
            f"{len(self.fresh)} new{new if self.fresh else ''}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.source),
            "copied": self.copied,
            "fresh": self.fresh,
            "test_before": self.test_before,
        }


def warm_start(model: RankingModel, source: Path, features: Mapping[str, Any]) -> WarmStart:
    """Copies into `model` (built) every weight of the export at `source` that it has a place for.
    `features`: a batch of raw features, to build the export's model on."""
    version = resolve_version(Path(source))
    metadata = ExportMetadata.read(version)
    old_schema = metadata.model_schema(source=str(version / METADATA_FILE))
    _check_compatible(version, metadata, old_schema, model)
    old = RankingModel(old_schema, metadata.architecture, metadata.hparams)
    old(features)
    # the export's object graph: `_Servable.layers`, the model's inference layers in order
    try:
        tf.train.Checkpoint(layers=old.inference_layers()).read(
            str(version / "variables" / "variables")
        ).assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise IncompatibleInit(
            f"--init-from {version}: its variables do not fit the model its metadata.json "
            f"describes ({first})"
        ) from None
    with tempfile.TemporaryDirectory(prefix="mtrank-init-") as scratch:
        saved = _parts(old).write(f"{scratch}/old")
        held = dict(tf.train.list_variables(saved))
        wanted = dict(tf.train.list_variables(_parts(model).write(f"{scratch}/new")))
        for key in sorted(set(held) & set(wanted)):
            if held[key] != wanted[key] and key.endswith(SUFFIX):
                raise IncompatibleInit(
                    f"--init-from {version}: {key.removesuffix(SUFFIX)} has shape {held[key]} "
                    f"in the export and {wanted[key]} here"
                )
        _parts(model).read(saved).expect_partial()
    variables = [k for k in wanted if k.endswith(SUFFIX)]
    return WarmStart(
        source=version,
        copied=sum(1 for k in variables if k in held),
        fresh=sorted(k.removesuffix(SUFFIX) for k in variables if k not in held),
        test_before=metadata.test_metrics,
    )


def _parts(model: RankingModel) -> tf.train.Checkpoint:
    """The model's weights keyed by what they are: towers by task name."""
    towers = {
        task.name: tower for task, tower in zip(model.schema.tasks, model.towers, strict=True)
    }
    return tf.train.Checkpoint(
        inputs=model.feature_inputs, crosses=model.crosses, backbone=model.backbone, towers=towers
    )


def _check_compatible(
    version: Path, metadata: ExportMetadata, old_schema: Schema, model: RankingModel
) -> None:
    """One line naming the first difference that makes the export's weights meaningless here."""
    where = f"--init-from {version}"
    if metadata.architecture != model.architecture:
        raise IncompatibleInit(
            f"{where}: trained as {metadata.architecture!r}, this run trains {model.architecture!r}"
        )
    old_features = {f.name: f for f in old_schema.features}
    new_features = {f.name: f for f in model.schema.features}
    for name in sorted(set(old_features) | set(new_features)):
        if name not in new_features:
            raise IncompatibleInit(
                f"{where}: feature {name!r} is in the export, not in schema.yaml"
            )
        if name not in old_features:
            raise IncompatibleInit(
                f"{where}: feature {name!r} is in schema.yaml, not in the export"
            )
        old, new = old_features[name], new_features[name]
        if old != new:
            raise IncompatibleInit(
                f"{where}: feature {name!r} differs: {old.model_dump(exclude_defaults=True)} in "
                f"the export, {new.model_dump(exclude_defaults=True)} in schema.yaml"
            )
    hparams = model.hparams.model_dump(mode="json")
    for key in sorted(set(metadata.hparams) | set(hparams)):
        if key not in metadata.hparams or key not in hparams:
            raise IncompatibleInit(f"{where}: hyperparameter {key!r} is set on one side only")
        if metadata.hparams[key] != hparams[key]:
            raise IncompatibleInit(
                f"{where}: hyperparameter {key!r} is {metadata.hparams[key]!r} in the export "
                f"and {hparams[key]!r} here"
            )
