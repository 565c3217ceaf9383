"""Synthetic click/conversion logs, and the true model that generated them (`mtrank synth`).

`generate(config, out_dir)` writes a small recommender world (users, items), a time-ordered log of
impressions split by time into train/val/test, the feature schema, and the ground truth
(`truth.npz`, `truth.json`). `TrueModel.load(out_dir)` gives back the generator's probabilities for
any (user, item, context), new pairs included, so a simulator can draw responses to its rankings.

    config.py       SynthConfig (sizes, seed, relatedness), the target rates, the random streams
    vocabulary.py   the categorical values: ages, genders, countries, categories, brands, ...
    parameters.py   UserTable, ItemTable, Effects: every parameter of the true model
    true_model.py   TrueModel: the click and conversion logits (the formulas), save and load
    world.py        drawing users, items and effects (`build_world`)
    impressions.py  drawing who saw what, when and where (`draw_impressions`)
    calibration.py  standardizing the affinities and solving the intercepts (`build_true_model`)
    tables.py       the Arrow tables (users, items, impressions) and the time split
    schema.py       the schema.yaml of the synthetic log (`schema_dict`)
    writer.py       `generate`: the whole job, writing every file

Numpy and pyarrow only: no TensorFlow.
"""

from training.synth.calibration import CALIBRATION_ROWS, build_true_model, calibrate
from training.synth.config import TARGET_CTR, TARGET_CVR, Rng, SynthConfig, random_streams
from training.synth.impressions import (
    DAYS,
    MAX_POSITION,
    START_TIMESTAMP,
    Impressions,
    draw_impressions,
    hour_probabilities,
)
from training.synth.parameters import FACTOR_DIM, Effects, ItemTable, UserTable
from training.synth.schema import next_power_of_two, schema_dict
from training.synth.tables import (
    SPLITS,
    impressions_table,
    items_table,
    split_by_time,
    users_table,
)
from training.synth.true_model import TRUTH_FORMAT, TrueModel, parse_ids
from training.synth.vocabulary import (
    AGE_BUCKETS,
    BRANDS_PER_CATEGORY,
    CATEGORIES,
    COUNTRIES,
    DEVICES,
    GENDERS,
    HOURS,
    brand_names,
)
from training.synth.world import MAX_RECENT, build_world
from training.synth.writer import Progress, SynthSummary, generate, quiet, stderr_progress

__all__ = [
    "AGE_BUCKETS",
    "BRANDS_PER_CATEGORY",
    "CALIBRATION_ROWS",
    "CATEGORIES",
    "COUNTRIES",
    "DAYS",
    "DEVICES",
    "FACTOR_DIM",
    "GENDERS",
    "HOURS",
    "MAX_POSITION",
    "MAX_RECENT",
    "SPLITS",
    "START_TIMESTAMP",
    "TARGET_CTR",
    "TARGET_CVR",
    "TRUTH_FORMAT",
    "Effects",
    "Impressions",
    "ItemTable",
    "Progress",
    "Rng",
    "SynthConfig",
    "SynthSummary",
    "TrueModel",
    "UserTable",
    "brand_names",
    "build_true_model",
    "build_world",
    "calibrate",
    "draw_impressions",
    "generate",
    "hour_probabilities",
    "impressions_table",
    "items_table",
    "next_power_of_two",
    "parse_ids",
    "quiet",
    "random_streams",
    "schema_dict",
    "split_by_time",
    "stderr_progress",
    "users_table",
]
