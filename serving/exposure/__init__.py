"""The exposure log (`--exposure-log FILE`): one JSON line per scored `/v1/rank` request.

    {"request_id": "9f..", "time": "2026-11-21T10:00:00.123Z", "user_id": "u17",
     "experiment": "gates", "variant": "control", "bucket": 1234, "model": "mmoe", "version": "3",
     "policy": "ctcvr_price", "candidates": 100,
     "item_ids": ["i5", "i9"], "context": {"device": "ios", "hour": "13", "position": 1.0},
     "scores": {"ctr": [0.05, 0.02], "cvr": [..], "ctcvr": [..], "score": [..]},
     "shadow": {"cgc": {"version": "1", "scores": {"ctr": [..], ..}}},
     "degraded": false,
     "features": {"user": {"user_id": "u17", "activity": 3.5, "recent_items": ["i4"]},
                  "context": {"device": "ios", ..}, "items": {"item_id": ["i5", "i9"], ..}}}

`item_ids`, every `scores` column (and every shadow's) hold the RETURNED items, in response
order: the `top_k` best by the policy's score, else every candidate in request order;
`candidates` is how many item ids the request sent. `policy` is the ranking policy whose fused
value is the `score` column (null, and no `score`, when none applied). `experiment`, `variant`
and `bucket` are null for a request that named its model; `shadow` is `{}` without shadow
models (a shadow that failed has `"error"` instead of `"scores"`; `"shadow_skipped": true` marks
a request whose shadows were not scored because too many were already waiting). `features`
only with `mtrank serve --log-features` (`features.served_features` says how values are
written); the writer then puts `{"kind": "schema", "model", "version", "schema"}` before the
first exposure of each model version in each file, and readers of exposures skip those lines.

Four modules:

- `entry.Exposure`: one line's fields, and its JSON; `features`: its served-feature block.
- `writer.ExposureLog`: a bounded queue and one writer thread. The request path only enqueues (never
  blocks on the disk, never encodes JSON); the thread encodes, appends and flushes whenever the
  queue runs empty, and rotates the file by size or age (`--exposure-log-max-mb`,
  `--exposure-log-rotate-minutes`: FILE.YYYYMMDDTHHMMSSZ). `close()` drains the queue before it
  returns, so a clean shutdown loses nothing. If the queue is full (the disk cannot keep up),
  lines are dropped and counted (`mtrank_exposures_total{outcome="dropped"}`) rather than
  slowing requests down.
- `recorder.ExposureRecorder`: what `/v1/rank` (`serving.ranking`) calls after scoring. With no shadow models the exposure goes
  to the log at once. With shadows it starts a task that scores them after the response is
  written, in the model thread pool, then logs the exposure with every score; `aclose()` waits
  for those tasks (the lifespan calls it before closing the log and the pool).
"""

from serving.exposure.entry import Exposure
from serving.exposure.recorder import ExposureRecorder
from serving.exposure.writer import ExposureLog

__all__ = ["Exposure", "ExposureLog", "ExposureRecorder"]
