"""Typed configuration from YAML files, with errors of one line that name the file, key and line.

    raw = read_yaml("schema.yaml", "schema", SchemaError)       # `schema.yaml:3: not valid YAML (...)`
    schema = validate_mapping(Schema, raw, "schema.yaml", SchemaError, "a mapping")
    # -> `schema.yaml: features[3].num_buckets: must be > 0, got -1 (feature 'x')`

Used by every typed file mtrank reads: the schema, training configs, experiments files and the
export contract (`ranker.contract`). Pure Python (PyYAML, pydantic).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from ranker.errors import MtrankError

M = TypeVar("M", bound=BaseModel)


def read_yaml(path: str | Path, what: str, error: type[MtrankError]) -> Any:
    """A YAML file's content; a missing file or bad YAML raises `error` naming the file (and line)."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise error(f"{path}: no such {what} file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise error(f"{path}: unreadable {what} file ({err})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise error(f"{where}: not valid YAML ({getattr(err, 'problem', err)})") from None


def validate_mapping(
    model: type[M], raw: Any, source: str, error: type[MtrankError], expected: str
) -> M:
    """`model` validated from `raw`; anything else is `error`, e.g. `schema.yaml: tasks[0].label: ...`."""
    if not isinstance(raw, Mapping):
        raise error(f"{source}: expected {expected}, got {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise error(f"{source}: {describe_validation_error(err, raw)}") from None


def describe_validation_error(err: ValidationError, raw: Mapping[str, Any]) -> str:
    """The first validation error as `features[3].num_buckets: must be > 0, got -1 (feature 'x')`."""
    first = err.errors()[0]
    loc = list(first["loc"])
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    elif first["type"] == "missing":
        message = "required key is missing"
    elif first["type"] == "literal_error":
        message = f"{message}, got {first.get('input')!r}"
    feature = _owner_name(raw, loc)
    suffix = f" ({str(loc[0]).rstrip('s')} {feature!r})" if feature else ""
    return f"{path}: {message}{suffix}" if path else f"{message}{suffix}"


def _owner_name(raw: Mapping[str, Any], loc: list[Any]) -> str | None:
    """The `name` of the list entry the error sits in (features[3] -> its name), if it has one."""
    if len(loc) >= 2 and isinstance(loc[1], int):
        entries = raw.get(loc[0])
        if (
            isinstance(entries, list)
            and loc[1] < len(entries)
            and isinstance(entries[loc[1]], Mapping)
        ):
            name = entries[loc[1]].get("name")
            return str(name) if name is not None else None
    return None
