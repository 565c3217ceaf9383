"""User activity segments of the test rows: terciles of `activity` from users.parquet.

Gate weights are reported per segment (`gates.summarize_gates`), to show whether a gate routes
light and heavy users to different experts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ranker.errors import MtrankError

SEGMENT_FEATURE = "activity"
SEGMENT_NAMES = ("low", "mid", "high")


def segment_rows(
    data_dir: Path, user_key: str, user_ids: np.ndarray
) -> tuple[np.ndarray, dict[str, Any]] | None:
    """Activity tercile (0 low, 1 mid, 2 high) of each test row, from users.parquet; None if absent.

    Cuts are the terciles of `activity` over the test ROWS (so each segment holds about a third of
    the impressions); a user missing from users.parquet gets -1 and belongs to no segment.
    """
    from training.data import read_columns

    path = data_dir / "users.parquet"
    if not path.exists():
        return None
    try:
        users = read_columns(path, [user_key, SEGMENT_FEATURE])
    except MtrankError:
        return None
    keys = np.asarray(users[user_key]).astype(str)
    activity = np.asarray(users[SEGMENT_FEATURE], dtype=np.float64)
    order = np.argsort(keys)
    keys, activity = keys[order], activity[order]
    wanted = np.asarray(user_ids).astype(str)
    where = np.clip(np.searchsorted(keys, wanted), 0, max(len(keys) - 1, 0))
    found = keys[where] == wanted
    row_activity = np.where(found, activity[where], np.nan)
    known = row_activity[found]
    if len(known) < len(SEGMENT_NAMES):
        return None
    cuts = np.quantile(known, [1 / 3, 2 / 3])
    segment = np.where(found, np.searchsorted(cuts, row_activity, side="right"), -1)
    edges = [float(known.min()), *map(float, cuts), float(known.max())]
    info = {
        "feature": SEGMENT_FEATURE,
        "how": "terciles of users.parquet activity over the test rows",
        "segments": {
            name: {
                "range": [edges[k], edges[k + 1]],
                "rows": int(np.sum(segment == k)),
            }
            for k, name in enumerate(SEGMENT_NAMES)
        },
    }
    return segment.astype(np.int64), info
