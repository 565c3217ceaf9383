"""`mtrank logs`: the service's logs turned into training data.

`to_dataset` (`mtrank logs to-dataset`) joins the exposure log that `mtrank serve --log-features`
writes (the exact features each returned item was scored on) with feedback logs that arrive
later (clicks, delayed conversions), keeps a conditioned label only inside the attribution window
after its condition, splits the rows by time and writes train/val/test Parquet files with the
logged schema, so the next model trains on what the service saw (no training-serving skew).

- `feedback`: feedback lines read and merged per shown item;
- `exposures`: exposure lines and schema lines read;
- `attribution`: which labels count (the attribution window);
- `rows`: a row's columns, typed for Parquet;
- `dataset`: the join, the time split and the files (`to_dataset`);
- `skips`: what was left out, counted by reason.
"""

from training.logs.dataset import Options, parse_split, to_dataset

__all__ = ["Options", "parse_split", "to_dataset"]
