"""One exported model version, loaded with plain TensorFlow, checked and warmed before it serves.

`Servable.load(path, name, version)` parses `metadata.json` (the export contract's
`ExportMetadata`, `ranker.contract`), rebuilds the schema from it, loads the SavedModel, checks
that the signature takes exactly the schema's features with the dtypes and ranks the contract
gives them and returns every output the metadata names, then calls it on a batch built from the
metadata (warmup). Any failure is a `ModelLoadError`: the manager refuses the
version and keeps serving the one it has. No mtrank training code, no Keras, no TFRS.

The SavedModel is loaded as TF Serving loads it: its `serve` graph into a session
(`tf.compat.v1.saved_model.load`), whose signature is called through one `make_callable` of
its input and output tensors. Against the eager signature function of `tf.saved_model.load`
(same scores, to the bit), a call of 500 rows took 0.3 ms less CPU: the numpy arrays are fed
in C, with no Python conversion and spec check per input, and the session runs the kernels in
the calling thread (inter-op threads -1), not handed to a pool thread and back. Two workers
answered 4-7% more requests/s at 8 clients (`benchmarks/serve_latency.py`; docs/serving.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ranker.contract import (
    METADATA_FILE,
    ExportMetadata,
    MetadataInvalid,
    MetadataMissing,
    MetadataUnreadable,
    signature_input,
)
from ranker.errors import MtrankError
from ranker.schema import Schema
from serving.batcher import Batch, FeatureBatcher
from serving.errors import ModelLoadError

log = logging.getLogger("mtrank.serving")

WARMUP_CALLS = 3
# how a metadata.json problem is reported in the model's status (TF Serving's error codes)
_CODES = {MetadataMissing: "NOT_FOUND", MetadataUnreadable: "DATA_LOSS"}


@dataclass(eq=False)
class Servable:
    """A loaded, checked and warmed model version. Immutable once built; safe to share."""

    name: str
    version: int
    path: Path
    metadata: ExportMetadata
    schema: Schema
    outputs: list[str]
    batcher: FeatureBatcher
    inputs: list[str]  # the signature's inputs, in the order `call` takes them
    call: Callable[..., list[np.ndarray]] = field(repr=False)  # inputs' arrays -> outputs'
    session: Any = field(repr=False)  # the session holding the graph and its variables
    loaded_at: float = field(default_factory=time.time)

    @classmethod
    def load(cls, path: Path, name: str, version: int, warmup_rows: int = 16) -> Servable:
        """Load, check and warm `path` (MODELS/NAME/VERSION); ModelLoadError says why not."""
        metadata = read_metadata(path)
        try:
            schema = metadata.model_schema(source=str(path / METADATA_FILE))
        except MtrankError as err:
            raise ModelLoadError(str(err), "INVALID_ARGUMENT") from None
        outputs, signature = list(metadata.outputs), metadata.signature
        if not (path / "saved_model.pb").is_file():
            raise ModelLoadError(f"{path}: no saved_model.pb", "NOT_FOUND")

        import tensorflow as tf

        started = time.perf_counter()
        session = tf.compat.v1.Session(graph=tf.Graph(), config=session_config(tf))
        try:
            inputs, call = open_signature(path, tf, session, signature, schema, outputs)
        except BaseException:
            session.close()
            raise
        servable = cls(
            name=name,
            version=version,
            path=path,
            metadata=metadata,
            schema=schema,
            outputs=outputs,
            batcher=FeatureBatcher(schema),
            inputs=inputs,
            call=call,
            session=session,
        )
        servable.warmup(warmup_rows)
        log.info(
            "loaded %s version %d from %s in %.1f s",
            name,
            version,
            path,
            time.perf_counter() - started,
        )
        return servable

    def predict(self, batch: Batch) -> dict[str, np.ndarray]:
        """Call the signature on one batch (blocking: run it in a thread); 1-D float32 scores."""
        return self.predict_batches([batch])

    def predict_batches(self, batches: list[Batch]) -> dict[str, np.ndarray]:
        """The scores of every row of `batches`, one batch after the other, from one call."""
        if len(batches) == 1:
            arrays = [batches[0][name] for name in self.inputs]
        else:
            arrays = [np.concatenate([batch[name] for batch in batches]) for name in self.inputs]
        return dict(zip(self.outputs, self.call(*arrays), strict=True))

    def warmup(self, rows: int) -> None:
        """Call the model on a batch of defaults; refuse it unless every output is `rows` finite floats."""
        batch = self.batcher.default_batch(rows)
        for _ in range(WARMUP_CALLS):
            try:
                scores = self.predict(batch)
            except Exception as err:
                raise ModelLoadError(
                    f"{self.path}: warmup call failed: {_one_line(err)}", "ABORTED"
                ) from None
        for name, values in scores.items():
            if values.shape != (rows,) or not np.isfinite(values).all():
                raise ModelLoadError(
                    f"{self.path}: warmup output {name!r} is not {rows} finite scores "
                    f"(shape {values.shape})",
                    "ABORTED",
                )

    @property
    def model_version(self) -> str:
        return str(self.version)


def open_signature(
    path: Path, tf: Any, session: Any, signature: str, schema: Schema, outputs: list[str]
) -> tuple[list[str], Callable[..., list[np.ndarray]]]:
    """Load `path`'s serve graph into `session` and check its `signature`: the inputs in the
    order the callable takes them (the schema's), and the callable (arrays -> `outputs`)."""
    graph = session.graph
    try:
        with graph.as_default(), _quiet(tf):
            meta_graph = tf.compat.v1.saved_model.load(session, [tf.saved_model.SERVING], str(path))
    except Exception as err:  # TensorFlow raises many types for a corrupt SavedModel
        raise ModelLoadError(f"{path}: not a loadable SavedModel: {_one_line(err)}") from None
    signatures = meta_graph.signature_def
    if signature not in signatures:
        raise ModelLoadError(
            f"{path}: no signature {signature!r} (has {sorted(signatures)})", "INVALID_ARGUMENT"
        )
    check_signature(path, tf, signatures[signature], schema, outputs)
    inputs = [feature.name for feature in schema.features]
    tensor = graph.get_tensor_by_name
    call = session.make_callable(
        [tensor(signatures[signature].outputs[name].name) for name in outputs],
        [tensor(signatures[signature].inputs[name].name) for name in inputs],
    )
    return inputs, call


def session_config(tf: Any) -> Any:
    """A model session's options: the intra-op threads TensorFlow was given for this process
    (0: one per core), and the kernels of a call run in the calling thread (inter-op -1)."""
    return tf.compat.v1.ConfigProto(
        intra_op_parallelism_threads=tf.config.threading.get_intra_op_parallelism_threads(),
        inter_op_parallelism_threads=-1,
    )


@contextmanager
def _quiet(tf: Any) -> Iterator[None]:
    """TensorFlow's Python logger held at ERROR: `tf.compat.v1.saved_model.load` warns on every
    call that it is deprecated in favour of `tf.saved_model.load` (see the module doc)."""
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def read_metadata(path: Path) -> ExportMetadata:
    """PATH/metadata.json parsed, or a ModelLoadError of one line naming the file and field."""
    try:
        return ExportMetadata.read(path)
    except (MetadataMissing, MetadataUnreadable, MetadataInvalid) as err:
        raise ModelLoadError(str(err), _CODES.get(type(err), "INVALID_ARGUMENT")) from None


def check_signature(
    path: Path, tf: Any, signature: Any, schema: Schema, outputs: list[str]
) -> None:
    """The signature (a `SignatureDef`) must take the schema's features (dtype, rank) and return
    `outputs`."""
    specs = dict(signature.inputs)
    expected = {feature.name: feature for feature in schema.features}
    if set(specs) != set(expected):
        extra = sorted(set(specs) - set(expected))
        absent = sorted(set(expected) - set(specs))
        raise ModelLoadError(
            f"{path}: the signature's inputs do not match the schema in {METADATA_FILE} "
            f"(only in the signature: {extra}; only in the schema: {absent})",
            "INVALID_ARGUMENT",
        )
    for name, spec in specs.items():
        wanted = signature_input(expected[name])
        dtype, rank = wanted.dtype, wanted.rank
        given = tf.as_dtype(spec.dtype).name
        given_rank = None if spec.tensor_shape.unknown_rank else len(spec.tensor_shape.dim)
        if given != dtype or given_rank != rank:
            raise ModelLoadError(
                f"{path}: input {name!r} is {given} of rank {given_rank}, but "
                f"the schema's {expected[name].type} feature needs {dtype} of rank {rank}",
                "INVALID_ARGUMENT",
            )
    absent = [name for name in outputs if name not in signature.outputs]
    if absent:
        raise ModelLoadError(
            f"{path}: the signature does not return {absent} (returns {sorted(signature.outputs)})",
            "INVALID_ARGUMENT",
        )


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]
