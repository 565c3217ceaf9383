"""Exposure logs read for `mtrank logs to-dataset`: the served requests and their schema lines.

An exposure line (format: `serving.exposure`) is one scored `/v1/rank` request: `request_id`,
`time`, `model`, `version`, the returned `item_ids`, the served `scores` (one column per output,
`score` for a policy's fused value) and, with `mtrank serve --log-features`, `features`:
`{"user": {NAME: VALUE}, "context": {NAME: VALUE}, "items": {NAME: [VALUE per item]}}`, the exact
values the model was given. Before the first exposure of a (model, version) in each file the
writer puts a schema line, `{"kind": "schema", "model", "version", "schema"}`, which types them.

Only requests some feedback line names are kept in memory; the others are counted.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ranker.errors import MtrankError
from ranker.schema import Schema
from training.ab import parse_time, read_json_lines
from training.logs.skips import Skips

ENTITIES = ("user", "context", "items")


@dataclass(frozen=True)
class ServedRequest:
    """One kept exposure: what was served, and the features it was scored on."""

    request_id: str
    time: float  # unix seconds
    model: str
    version: str
    item_ids: list[str]
    scores: dict[str, list[Any]]
    features: dict[str, dict[str, Any]]  # "user", "context", "items" -> {name: value(s)}
    where: str  # FILE:LINE


@dataclass
class ExposureLogs:
    requests: dict[str, ServedRequest] = field(default_factory=dict)
    schemas: dict[tuple[str, str], Schema] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)  # every request id read, kept or skipped
    lines: int = 0
    schema_lines: int = 0
    with_features: int = 0
    without_feedback: int = 0


def read_exposures(
    paths: Sequence[Path],
    wanted: Container[str],
    model: str | None,
    skips: Skips,
    progress: Callable[[str], None],
) -> ExposureLogs:
    """The exposures of `paths` whose request id is in `wanted`, and every schema line.

    Skipped and counted: lines without a request_id, repeated request ids (the first line wins),
    lines without features, other models than `model`, and columns whose lengths do not match
    `item_ids`. Lines that are not JSON objects and fields of the wrong type are errors naming
    FILE:LINE.
    """
    logs = ExposureLogs()
    for path in paths:
        before = logs.lines
        for number, line in read_json_lines(path, "--exposures"):
            where = f"{path}:{number}"
            logs.lines += 1
            kind = line.get("kind")
            if kind == "schema":
                logs.schema_lines += 1
                _add_schema(logs.schemas, line, where)
                continue
            if kind is not None:
                raise MtrankError(f"{where}: unknown line kind {kind!r} (expected 'schema')")
            request = _read_exposure(line, where, logs, wanted, model, skips)
            if request is not None:
                logs.requests[request.request_id] = request
        progress(f"{path}: {logs.lines - before} exposure lines")
    return logs


def _add_schema(schemas: dict[tuple[str, str], Schema], line: dict[str, Any], where: str) -> None:
    key = (_text(line, "model", where), _text(line, "version", where))
    schema = Schema.from_dict(line.get("schema"), source=f"{where}: schema")
    known = schemas.setdefault(key, schema)
    if known != schema:
        raise MtrankError(
            f"{where}: model {key[0]!r} version {key[1]!r} has a different schema than an "
            "earlier schema line"
        )


def _read_exposure(
    line: dict[str, Any],
    where: str,
    logs: ExposureLogs,
    wanted: Container[str],
    model: str | None,
    skips: Skips,
) -> ServedRequest | None:
    """The line as a ServedRequest, or None when it is skipped (counted) or has no feedback."""
    if "request_id" not in line:
        skips.count("exposure_without_request_id")
        return None
    request_id = _text(line, "request_id", where)
    if request_id in logs.seen:
        skips.count("duplicate_request_id")
        return None
    logs.seen.add(request_id)
    features = line.get("features")
    if features is None:
        skips.count("exposure_without_features")
        return None
    logs.with_features += 1
    served_by = _text(line, "model", where)
    if model is not None and served_by != model:
        skips.count("exposure_of_other_model")
        return None
    if request_id not in wanted:
        logs.without_feedback += 1
        return None
    item_ids = line.get("item_ids")
    if not isinstance(item_ids, list) or not all(isinstance(i, str) for i in item_ids):
        raise MtrankError(f"{where}: 'item_ids' must be a list of strings")
    scores = _mapping(line.get("scores"), "scores", where)
    if not isinstance(features, dict):
        raise MtrankError(f"{where}: 'features' must be an object")
    groups = {
        entity: _mapping(features.get(entity), f"features.{entity}", where) for entity in ENTITIES
    }
    columns = [*scores.values(), *groups["items"].values()]
    if not all(isinstance(c, list) and len(c) == len(item_ids) for c in columns):
        skips.count("columns_not_matching_items")
        return None
    if "time" not in line:
        raise MtrankError(f"{where}: missing key 'time'")
    return ServedRequest(
        request_id=request_id,
        time=parse_time(line["time"], f"{where}: 'time'"),
        model=served_by,
        version=_text(line, "version", where),
        item_ids=item_ids,
        scores=scores,
        features=groups,
        where=where,
    )


def _text(line: dict[str, Any], key: str, where: str) -> str:
    value = line.get(key)
    if not isinstance(value, str):
        found = "missing" if value is None else f"a {type(value).__name__}"
        raise MtrankError(f"{where}: {key!r} must be a string ({found})")
    return value


def _mapping(value: Any, key: str, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MtrankError(f"{where}: {key!r} must be an object")
    return value
