"""`generate`, the whole `mtrank synth` job: it draws the world and the log, and writes to OUT:

OUT/users.parquet, OUT/items.parquet     the world's observable features
OUT/{train,val,test}.parquet             impressions split by time (80% / 10% / 10%)
OUT/schema.yaml                          features by entity, ctr, cvr and ctcvr
OUT/truth.npz, OUT/truth.json            the true model (`TrueModel.load(OUT)`)
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from ranker.errors import MtrankError
from training.synth.calibration import build_true_model
from training.synth.config import SynthConfig, random_streams
from training.synth.impressions import draw_impressions
from training.synth.schema import schema_dict
from training.synth.tables import impressions_table, items_table, split_by_time, users_table

Progress = Callable[[str], None]


def quiet(message: str) -> None:
    """The default progress reporter: says nothing."""


def stderr_progress(message: str) -> None:
    """A progress reporter that prints each step to stderr."""
    print(f"synth: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class SynthSummary:
    """What `generate` wrote: rows per split and the observed rates."""

    out_dir: Path
    rows: dict[str, int]
    ctr: float
    cvr: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out_dir),
            "rows": self.rows,
            "ctr": round(self.ctr, 5),
            "cvr": round(self.cvr, 5),
            "seconds": round(self.seconds, 2),
        }


def _prepare_out_dir(out: str | Path) -> Path:
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise MtrankError(f"--out {path} is a file, not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise MtrankError(f"--out {path}: cannot create it ({err.strerror})") from None
    return path


def generate(config: SynthConfig, out: str | Path, progress: Progress = quiet) -> SynthSummary:
    """Write users, items, train/val/test impressions, schema.yaml and the truth to `out`."""
    from ranker.schema import Schema

    config.validate()
    out_dir = _prepare_out_dir(out)
    started = time.perf_counter()
    _, _, impression_rng, label_rng = random_streams(config.seed)
    model = build_true_model(config)
    progress(f"world: {config.users} users, {config.items} items")
    imp = draw_impressions(model, config.rows, impression_rng)
    table = impressions_table(model, imp, label_rng)
    progress(f"impressions: {config.rows} rows drawn")
    pq.write_table(users_table(model), out_dir / "users.parquet")
    pq.write_table(items_table(model), out_dir / "items.parquet")
    parts = split_by_time(table)
    for name, part in parts.items():
        pq.write_table(part, out_dir / f"{name}.parquet")
        progress(f"{name}.parquet: {part.num_rows} rows")
    Schema.from_dict(schema_dict(config)).dump(out_dir / "schema.yaml")
    model.save(out_dir, config)
    click = table.column("click").to_numpy()
    conversion = table.column("conversion").to_numpy()
    clicks = int(click.sum())
    return SynthSummary(
        out_dir=out_dir,
        rows={name: part.num_rows for name, part in parts.items()},
        ctr=clicks / len(click),
        cvr=int(conversion.sum()) / max(clicks, 1),
        seconds=time.perf_counter() - started,
    )
