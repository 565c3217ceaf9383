"""`mtrank train --negative-sampling-rate R`: the correction for a train.parquet whose negatives of
the root task were kept with probability R.

Down-sampling negatives (click = 0 rows) to a rate R leaves the positives and multiplies the odds
the model learns by 1 / R; a score q of such a model maps back to the unsampled probability

    p = q / (q + (1 - q) / R)

(He et al., "Practical Lessons from Predicting Clicks on Ads at Facebook", ADKDD 2014). The root
task is the first served binary task without a condition (ctr in a click log): its negatives are
the rows sampled. A conditioned task (cvr, on clicked rows) sees only positives of the root task,
which sampling keeps, so it needs no correction; products are recomputed from the corrected tasks
(`training.calibration`). mtrank does not sample: R says how train.parquet was made, and val and
test must be unsampled (the calibrators are fitted on val).
"""

from __future__ import annotations

from typing import Any

from ranker.schema import Schema, Task


def correct_negative_sampling(q: Any, rate: float) -> Any:
    """q / (q + (1 - q) / rate): the unsampled probability of a score `q` learned with negatives
    kept with probability `rate`; numpy arrays or tensors alike."""
    return q / (q + (1.0 - q) / rate)


def root_task(schema: Schema) -> Task | None:
    """The task whose negatives a sampling rate refers to: the first served binary task without a
    condition (ctr in a click log); None if the schema has none."""
    return next(
        (
            task
            for task in schema.tasks
            if task.type == "binary" and not task.auxiliary and task.condition is None
        ),
        None,
    )
