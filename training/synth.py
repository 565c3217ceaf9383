"""Synthetic click/conversion logs, and the true model that generated them.

`generate(config, out_dir)` writes a small recommender world (users, items), a time-ordered log of
impressions split by time into train/val/test, the feature schema, and the ground truth
(`truth.npz`, `truth.json`). `TrueModel.load(out_dir)` gives back the generator's probabilities for
any (user, item, context), new pairs included, so a simulator can draw responses to its rankings.

The true model, per impression of item i to user u in context (device d, hour h, position p):

    click logit = b_click + affinity(u, i)                              user x item, mostly observable
                + category[c_i] + brand[b_i] + w_pop * z(log1p popularity_i) + quality_i
                + w_act * z(log activity_u) + bias_u + device[d] + hour[h] - w_pos * log(p)
    affinity    = age_category[a_u, c_i] + gender_category[g_u, c_i] + country_brand[k_u, b_i]
                + w_recent * share of u's recent items in category c_i + factor_u . factor_i

    conversion logit (given a click)
                = b_conv + s * (r * z(affinity) + sqrt(1 - r^2) * z(conv_affinity))
                - sensitivity_u * z(log price_i) + conv_category[c_i] + conv_brand[b_i] + conv_quality_i + conv_device[d]
    conv_affinity = conv_age_category[a_u, c_i] + conv_country_category[k_u, c_i]
                  + conv_factor_u . conv_factor_i
    sensitivity_u = w_price + country_price[k_u] - w_act_price * z(log activity_u)

where r is `relatedness` (the correlation of the two affinity terms: 0 independent, 1 the same),
z() standardizes over the impression distribution, and the interaction tables are low rank (what
embeddings and an MLP learn). Per-id latent terms (factors, quality, bias) are a small share of the
logit variance. The intercepts are solved so that the mean CTR is `TARGET_CTR` and the mean CVR of
clicks is `TARGET_CVR` for any seed and size. Position moves clicks only, never conversions, and
conversions are only observed on clicks (sample selection bias).

Numpy and pyarrow only: no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ranker.errors import MtrankError

AGE_BUCKETS = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
GENDERS = ("female", "male", "unknown")
COUNTRIES = ("US", "IN", "BR", "DE", "GB", "FR", "JP", "ES", "IT", "CA")
CATEGORIES = (
    "electronics", "books", "fashion", "home", "beauty", "sports", "toys", "grocery", "garden",
    "automotive", "music", "movies", "games", "health", "pets", "baby", "office", "jewelry",
    "shoes", "tools",
)  # fmt: skip
BRANDS_PER_CATEGORY = 10
DEVICES = ("ios", "android", "web")
HOURS = 24
MAX_POSITION = 20
MAX_RECENT = 20
FACTOR_DIM = 8

START_TIMESTAMP = 1_767_225_600  # 2026-01-01T00:00:00Z
DAYS = 28
SPLITS = (("train", 0.0, 0.8), ("val", 0.8, 0.9), ("test", 0.9, 1.0))

TARGET_CTR = 0.05
TARGET_CVR = 0.08
CALIBRATION_ROWS = 100_000
TRUTH_FORMAT = 1

Progress = Callable[[str], None]
Rng = np.random.Generator


def _quiet(message: str) -> None:
    """The default progress reporter: says nothing."""


def stderr_progress(message: str) -> None:
    """A progress reporter that prints each step to stderr."""
    print(f"synth: {message}", file=sys.stderr, flush=True)


# ---- configuration --------------------------------------------------------------------------


@dataclass(frozen=True)
class SynthConfig:
    """What to generate: sizes, seed, and how related the click and conversion tasks are."""

    rows: int = 200_000
    users: int = 10_000
    items: int = 2_000
    seed: int = 0
    relatedness: float = 0.5

    def validate(self) -> None:
        """Raise MtrankError, naming the flag, for a value the generator cannot use."""
        if self.rows <= 0:
            raise MtrankError(f"--rows must be > 0, got {self.rows}")
        if self.users < 1:
            raise MtrankError(f"--users must be >= 1, got {self.users}")
        if self.items < 1:
            raise MtrankError(f"--items must be >= 1, got {self.items}")
        if self.seed < 0:
            raise MtrankError(f"--seed must be >= 0, got {self.seed}")
        if not 0.0 <= self.relatedness <= 1.0:
            raise MtrankError(f"--relatedness must be in [0, 1], got {self.relatedness}")


# ---- the world and the true model -----------------------------------------------------------


@dataclass(frozen=True)
class UserTable:
    """Every user's observable features and latent parameters, indexed by user number."""

    age: np.ndarray  # index into AGE_BUCKETS
    gender: np.ndarray  # index into GENDERS
    country: np.ndarray  # index into COUNTRIES
    activity: np.ndarray  # sessions per week (lognormal)
    device: np.ndarray  # primary device, index into DEVICES
    taste: np.ndarray  # (users, categories) probabilities of browsing each category
    recent: np.ndarray  # recent item numbers of all users, concatenated
    recent_offsets: np.ndarray  # user u's recent items are recent[offsets[u]:offsets[u + 1]]
    recent_share: np.ndarray  # (users, categories) share of the user's recent items per category
    factor: np.ndarray  # (users, FACTOR_DIM) latent click factors
    conv_factor: np.ndarray  # (users, FACTOR_DIM) latent conversion factors
    bias: np.ndarray  # latent click propensity


@dataclass(frozen=True)
class ItemTable:
    """Every item's observable features and latent parameters, indexed by item number."""

    category: np.ndarray  # index into CATEGORIES
    brand: np.ndarray  # category * BRANDS_PER_CATEGORY + rank within the category
    price: np.ndarray
    popularity: np.ndarray  # >= 0; impressions are drawn in proportion to it
    quality: np.ndarray  # latent click quality
    conv_quality: np.ndarray  # latent conversion quality
    factor: np.ndarray  # (items, FACTOR_DIM)
    conv_factor: np.ndarray  # (items, FACTOR_DIM)


@dataclass(frozen=True)
class Effects:
    """The coefficients of the click and conversion logits (see the module docstring)."""

    age_category: np.ndarray
    gender_category: np.ndarray
    country_brand: np.ndarray
    category: np.ndarray
    brand: np.ndarray
    device: np.ndarray
    hour: np.ndarray
    conv_age_category: np.ndarray
    conv_country_category: np.ndarray
    conv_category: np.ndarray
    conv_brand: np.ndarray
    conv_device: np.ndarray
    country_price: np.ndarray
    recent_weight: float
    popularity_weight: float
    activity_weight: float
    position_weight: float
    price_weight: float
    activity_price_weight: float
    conv_affinity_scale: float
    relatedness: float
    log_price_mean: float
    log_price_std: float
    log_popularity_mean: float
    log_popularity_std: float
    log_activity_mean: float
    log_activity_std: float
    affinity_mean: float = 0.0
    affinity_std: float = 1.0
    conv_affinity_mean: float = 0.0
    conv_affinity_std: float = 1.0
    click_intercept: float = 0.0
    conv_intercept: float = 0.0


@dataclass(frozen=True)
class TrueModel:
    """The generator's ground truth: P(click) and P(conversion | click) for any user, item, context."""

    users: UserTable
    items: ItemTable
    effects: Effects

    # ---- logits over integer indices ------------------------------------------------------

    def affinity(self, u: np.ndarray, i: np.ndarray) -> np.ndarray:
        """The user x item part of the click logit: observable interactions plus latent factors."""
        users, items, fx = self.users, self.items, self.effects
        cat, brand = items.category[i], items.brand[i]
        return (
            fx.age_category[users.age[u], cat]
            + fx.gender_category[users.gender[u], cat]
            + fx.country_brand[users.country[u], brand]
            + fx.recent_weight * users.recent_share[u, cat]
            + np.einsum("nk,nk->n", users.factor[u], items.factor[i])
        )

    def conv_affinity(self, u: np.ndarray, i: np.ndarray) -> np.ndarray:
        """The user x item part of the conversion logit that is independent of the click's."""
        users, items, fx = self.users, self.items, self.effects
        cat = items.category[i]
        return (
            fx.conv_age_category[users.age[u], cat]
            + fx.conv_country_category[users.country[u], cat]
            + np.einsum("nk,nk->n", users.conv_factor[u], items.conv_factor[i])
        )

    def click_logit(
        self,
        u: np.ndarray,
        i: np.ndarray,
        device: np.ndarray,
        hour: np.ndarray,
        position: np.ndarray,
    ) -> np.ndarray:
        """log-odds of a click on item i shown to user u at `position` (1 = top)."""
        users, items, fx = self.users, self.items, self.effects
        return (
            fx.click_intercept
            + self.affinity(u, i)
            + fx.category[items.category[i]]
            + fx.brand[items.brand[i]]
            + fx.popularity_weight * self._z_log_popularity(i)
            + items.quality[i]
            + fx.activity_weight * self._z_log_activity(u)
            + users.bias[u]
            + fx.device[device]
            + fx.hour[hour]
            - fx.position_weight * np.log(position)
        )

    def conversion_logit(self, u: np.ndarray, i: np.ndarray, device: np.ndarray) -> np.ndarray:
        """log-odds of a conversion given a click on item i by user u."""
        users, items, fx = self.users, self.items, self.effects
        r = fx.relatedness
        shared = (self.affinity(u, i) - fx.affinity_mean) / fx.affinity_std
        own = (self.conv_affinity(u, i) - fx.conv_affinity_mean) / fx.conv_affinity_std
        sensitivity = (
            fx.price_weight
            + fx.country_price[users.country[u]]
            - fx.activity_price_weight * self._z_log_activity(u)
        )
        z_price = (np.log(items.price[i]) - fx.log_price_mean) / fx.log_price_std
        return (
            fx.conv_intercept
            + fx.conv_affinity_scale * (r * shared + math.sqrt(1.0 - r * r) * own)
            - sensitivity * z_price
            + fx.conv_category[items.category[i]]
            + fx.conv_brand[items.brand[i]]
            + items.conv_quality[i]
            + fx.conv_device[device]
        )

    def _z_log_popularity(self, i: np.ndarray) -> np.ndarray:
        fx = self.effects
        return (np.log1p(self.items.popularity[i]) - fx.log_popularity_mean) / fx.log_popularity_std

    def _z_log_activity(self, u: np.ndarray) -> np.ndarray:
        fx = self.effects
        return (np.log(self.users.activity[u]) - fx.log_activity_mean) / fx.log_activity_std

    # ---- probabilities over raw values (string ids) ---------------------------------------

    def p_click(
        self,
        user_ids: Sequence[str] | np.ndarray,
        item_ids: Sequence[str] | np.ndarray,
        device: Sequence[str] | np.ndarray,
        hour: Sequence[int] | np.ndarray,
        position: Sequence[int] | np.ndarray,
    ) -> np.ndarray:
        """P(click) as float32 for each (user "u<n>", item "i<n>", device, hour 0-23, position 1-20)."""
        u = parse_ids(user_ids, "u", len(self.users.age), "user_id")
        i = parse_ids(item_ids, "i", len(self.items.category), "item_id")
        logit = self.click_logit(
            u, i, _device_index(device), _hour_index(hour), _position_value(position)
        )
        return _sigmoid(logit).astype(np.float32)

    def p_conversion(
        self,
        user_ids: Sequence[str] | np.ndarray,
        item_ids: Sequence[str] | np.ndarray,
        device: Sequence[str] | np.ndarray,
    ) -> np.ndarray:
        """P(conversion | click) as float32; it does not depend on the hour or the position."""
        u = parse_ids(user_ids, "u", len(self.users.age), "user_id")
        i = parse_ids(item_ids, "i", len(self.items.category), "item_id")
        return _sigmoid(self.conversion_logit(u, i, _device_index(device))).astype(np.float32)

    # ---- persistence ------------------------------------------------------------------------

    def save(self, out_dir: Path, config: SynthConfig) -> None:
        """Write every parameter to `truth.npz` and the vocabularies and scalars to `truth.json`."""
        arrays: dict[str, np.ndarray] = {}
        for prefix, part in (
            ("users", self.users),
            ("items", self.items),
            ("effects", self.effects),
        ):
            for field in dataclasses.fields(part):
                arrays[f"{prefix}.{field.name}"] = np.asarray(getattr(part, field.name))
        np.savez_compressed(out_dir / "truth.npz", **arrays)  # type: ignore[arg-type]
        meta = {
            "format": TRUTH_FORMAT,
            "config": dataclasses.asdict(config),
            "targets": {"ctr": TARGET_CTR, "cvr": TARGET_CVR},
            "vocabularies": _vocabularies(),
            "effects": {
                f.name: getattr(self.effects, f.name)
                for f in dataclasses.fields(self.effects)
                if f.type == "float"
            },
        }
        (out_dir / "truth.json").write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, out_dir: str | Path) -> TrueModel:
        """Read the model that `generate` wrote to `out_dir/truth.npz`."""
        path = Path(out_dir) / "truth.npz"
        if not path.is_file():
            raise MtrankError(
                f"{path}: no such file (write it with `mtrank synth --out {out_dir}`)"
            )
        with np.load(path, allow_pickle=False) as data:
            parts = [_from_arrays(kind, prefix, data) for kind, prefix in _PARTS]
        return cls(users=parts[0], items=parts[1], effects=parts[2])  # type: ignore[arg-type]


_PARTS: tuple[tuple[type, str], ...] = (
    (UserTable, "users"),
    (ItemTable, "items"),
    (Effects, "effects"),
)


def _from_arrays(kind: type, prefix: str, data: Any) -> Any:
    """Rebuild one dataclass of the model from its `prefix.field` arrays (0-d ones as floats)."""
    values: dict[str, Any] = {}
    for field in dataclasses.fields(kind):
        array = data[f"{prefix}.{field.name}"]
        values[field.name] = float(array) if field.type == "float" else array
    return kind(**values)


def _vocabularies() -> dict[str, list[str]]:
    return {
        "age_bucket": list(AGE_BUCKETS),
        "gender": list(GENDERS),
        "country": list(COUNTRIES),
        "category": list(CATEGORIES),
        "brand": brand_names(),
        "device": list(DEVICES),
    }


def brand_names() -> list[str]:
    """Brand vocabulary: each brand is nested in one category, e.g. `books_03`."""
    return [f"{c}_{k:02d}" for c in CATEGORIES for k in range(BRANDS_PER_CATEGORY)]


def parse_ids(values: Sequence[str] | np.ndarray, prefix: str, count: int, name: str) -> np.ndarray:
    """Numbers of ids like `u17` as int64; an id that is not `prefix<n>` with n < count raises."""
    text = np.asarray(values, dtype=str)
    if text.size and not np.all(np.char.startswith(text, prefix)):
        bad = text[~np.char.startswith(text, prefix)][0]
        raise MtrankError(f"{name}: {bad!r} is not an id of this world ({prefix}<n>)")
    try:
        numbers = np.char.lstrip(text, prefix).astype(np.int64)
    except ValueError:
        raise MtrankError(f"{name}: ids must look like {prefix}<n>") from None
    if numbers.size and (numbers.min() < 0 or numbers.max() >= count):
        raise MtrankError(f"{name}: ids must be {prefix}0..{prefix}{count - 1}")
    return numbers


def _device_index(device: Sequence[str] | np.ndarray) -> np.ndarray:
    text = np.asarray(device, dtype=str)
    index = np.full(text.shape, -1, dtype=np.int64)
    for k, name in enumerate(DEVICES):
        index[text == name] = k
    if np.any(index < 0):
        raise MtrankError(f"device: {text[index < 0][0]!r} is not one of {list(DEVICES)}")
    return index


def _hour_index(hour: Sequence[int] | np.ndarray) -> np.ndarray:
    values = np.asarray(hour, dtype=np.int64)
    if values.size and (values.min() < 0 or values.max() >= HOURS):
        raise MtrankError("hour: must be in 0..23")
    return values


def _position_value(position: Sequence[int] | np.ndarray) -> np.ndarray:
    values = np.asarray(position, dtype=np.float64)
    if values.size and values.min() < 1:
        raise MtrankError("position: must be >= 1")
    return values


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# ---- drawing the world ----------------------------------------------------------------------


def _low_rank(rng: Rng, rows: int, cols: int, rank: int, std: float) -> np.ndarray:
    """A (rows, cols) table of products of rank-`rank` factors, scaled to standard deviation std."""
    table = rng.normal(size=(rows, rank)) @ rng.normal(size=(cols, rank)).T
    return table * (std / table.std())


def _nested_low_rank(rng: Rng, rows: int, groups: int, rank: int, std: float) -> np.ndarray:
    """Like `_low_rank` over (rows, groups * BRANDS_PER_CATEGORY) columns nested in groups: a
    column's factor is its group's plus a smaller own part, so brands of a category look alike."""
    group_factor = rng.normal(size=(groups, rank))
    column_factor = np.repeat(group_factor, BRANDS_PER_CATEGORY, axis=0)
    column_factor = column_factor + 0.5 * rng.normal(size=column_factor.shape)
    table = rng.normal(size=(rows, rank)) @ column_factor.T
    return table * (std / table.std())


def _skewed_probs(rng: Rng, n: int, concentration: float) -> np.ndarray:
    return rng.dirichlet(np.full(n, concentration))


def _draw_in_groups(
    rng: Rng, groups: np.ndarray, weights: np.ndarray, wanted: np.ndarray
) -> np.ndarray:
    """For each entry of `wanted` (a group), a member of that group drawn in proportion to weight.

    `groups[j]` is member j's group; a wanted group without members yields -1.
    """
    order = np.argsort(groups, kind="stable")
    cumulative = np.cumsum(weights[order])
    n_groups = int(max(groups.max(), wanted.max())) + 1
    ends = np.searchsorted(groups[order], np.arange(n_groups), side="right")
    starts = np.concatenate([[0], ends[:-1]])
    low = np.where(starts > 0, cumulative[np.maximum(starts - 1, 0)], 0.0)
    high = cumulative[np.maximum(ends - 1, 0)]
    target = low[wanted] + rng.random(len(wanted)) * (high[wanted] - low[wanted])
    pick = np.searchsorted(cumulative, target, side="right")
    pick = np.clip(pick, starts[wanted], np.maximum(ends[wanted] - 1, 0))
    empty = starts[wanted] == ends[wanted]
    return np.where(empty, -1, order[pick])


def _draw_rows(rng: Rng, cdf: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """For each entry of `rows`, a column drawn from that row of a row-wise cumulative `cdf`."""
    u = rng.random(len(rows)) * cdf[rows, -1]
    column = np.zeros(len(rows), dtype=np.int64)
    for k in range(cdf.shape[1] - 1):  # a loop over columns keeps memory at one row's worth
        column += cdf[rows, k] <= u
    return column


def _draw_items(rng: Rng, n_items: int) -> dict[str, np.ndarray]:
    """Observable item features: category, brand nested in it, price by category, popularity."""
    n_cat = len(CATEGORIES)
    category = rng.choice(n_cat, size=n_items, p=_skewed_probs(rng, n_cat, 2.0))
    in_category = 1.0 / np.arange(1, BRANDS_PER_CATEGORY + 1) ** 0.8
    rank = rng.choice(BRANDS_PER_CATEGORY, size=n_items, p=in_category / in_category.sum())
    log_price_by_category = rng.normal(3.2, 0.8, size=n_cat)
    price = np.exp(log_price_by_category[category] + rng.normal(0.0, 0.5, size=n_items))
    popularity = 40.0 * np.exp(rng.normal(0.0, 1.1, size=n_items))
    return {
        "category": category,
        "brand": category * BRANDS_PER_CATEGORY + rank,
        "price": np.round(price, 2).clip(0.5),
        "popularity": np.round(popularity, 1),
    }


def _draw_users(rng: Rng, n_users: int) -> dict[str, np.ndarray]:
    """Observable user features (demographics, skewed activity) and a primary device."""
    age_p = np.array([0.14, 0.27, 0.23, 0.16, 0.12, 0.08])
    gender_p = np.array([0.49, 0.47, 0.04])
    country_p = 1.0 / np.arange(1, len(COUNTRIES) + 1) ** 0.9
    return {
        "age": rng.choice(len(AGE_BUCKETS), size=n_users, p=age_p),
        "gender": rng.choice(len(GENDERS), size=n_users, p=gender_p),
        "country": rng.choice(len(COUNTRIES), size=n_users, p=country_p / country_p.sum()),
        "activity": np.round(np.exp(rng.normal(1.0, 0.7, size=n_users)), 2).clip(0.1),
        "device": rng.choice(len(DEVICES), size=n_users, p=[0.35, 0.45, 0.20]),
    }


def _draw_effects(rng: Rng, relatedness: float) -> Effects:
    """Coefficients of both logits; interaction tables are low rank, standard deviations fixed."""
    n_age, n_gender, n_country = len(AGE_BUCKETS), len(GENDERS), len(COUNTRIES)
    n_cat, n_brand = len(CATEGORIES), len(CATEGORIES) * BRANDS_PER_CATEGORY
    hours = np.arange(HOURS)
    return Effects(
        age_category=_low_rank(rng, n_age, n_cat, 2, 0.3),
        gender_category=_low_rank(rng, n_gender, n_cat, 1, 0.3),
        country_brand=_nested_low_rank(rng, n_country, n_cat, 2, 0.25),
        category=rng.normal(0.0, 0.35, size=n_cat),
        brand=rng.normal(0.0, 0.15, size=n_brand),
        device=np.array([0.12, 0.0, -0.15]),
        hour=0.18 * np.sin(2.0 * np.pi * (hours - 14) / 24.0),
        conv_age_category=_low_rank(rng, n_age, n_cat, 2, 0.3),
        conv_country_category=_low_rank(rng, n_country, n_cat, 2, 0.25),
        conv_category=rng.normal(0.0, 0.3, size=n_cat),
        conv_brand=rng.normal(0.0, 0.1, size=n_brand),
        conv_device=np.array([0.15, -0.1, 0.25]),
        country_price=rng.normal(0.0, 0.15, size=n_country),
        recent_weight=1.2,
        popularity_weight=0.5,
        activity_weight=0.2,
        position_weight=0.7,
        price_weight=0.6,
        activity_price_weight=0.1,
        conv_affinity_scale=0.5,
        relatedness=relatedness,
        log_price_mean=0.0,
        log_price_std=1.0,
        log_popularity_mean=0.0,
        log_popularity_std=1.0,
        log_activity_mean=0.0,
        log_activity_std=1.0,
    )


def _user_taste(rng: Rng, users: dict[str, np.ndarray], fx: Effects) -> np.ndarray:
    """P(category) a user browses: demographic tastes plus an individual one, as a softmax."""
    base = fx.age_category[users["age"]] + fx.gender_category[users["gender"]]
    logits = 2.0 * base + rng.normal(0.0, 1.0, size=base.shape)
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    return weights / weights.sum(axis=1, keepdims=True)


def _recent_items(
    rng: Rng, taste: np.ndarray, activity: np.ndarray, category: np.ndarray, popularity: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each user's recent items, drawn from the categories they like; returns flat, offsets, share."""
    n_users, n_cat = taste.shape
    length = np.minimum(rng.poisson(2.0 * activity), MAX_RECENT)
    offsets = np.concatenate([[0], np.cumsum(length)]).astype(np.int64)
    owner = np.repeat(np.arange(n_users), length)
    wanted = _draw_rows(rng, np.cumsum(taste, axis=1), owner)
    flat = _draw_in_groups(rng, category, popularity, wanted)
    keep = flat >= 0  # a category with no items (tiny worlds) yields nothing
    owner, flat = owner[keep], flat[keep]
    length = np.bincount(owner, minlength=n_users)
    offsets = np.concatenate([[0], np.cumsum(length)]).astype(np.int64)
    counts = np.zeros((n_users, n_cat))
    np.add.at(counts, (owner, category[flat]), 1.0)
    share = counts / np.maximum(length, 1)[:, None]
    return flat.astype(np.int64), offsets, share


def build_world(config: SynthConfig, rng: Rng) -> TrueModel:
    """Draw users, items and effects; intercepts and standardizations are still placeholders."""
    fx = _draw_effects(rng, config.relatedness)
    users = _draw_users(rng, config.users)
    items = _draw_items(rng, config.items)
    taste = _user_taste(rng, users, fx)
    recent, offsets, share = _recent_items(
        rng, taste, users["activity"], items["category"], items["popularity"]
    )
    user_table = UserTable(
        **users,
        taste=taste,
        recent=recent,
        recent_offsets=offsets,
        recent_share=share,
        factor=rng.normal(0.0, 0.4, size=(config.users, FACTOR_DIM)) / FACTOR_DIM**0.25,
        conv_factor=rng.normal(0.0, 0.3, size=(config.users, FACTOR_DIM)) / FACTOR_DIM**0.25,
        bias=rng.normal(0.0, 0.1, size=config.users),
    )
    item_table = ItemTable(
        **items,
        quality=rng.normal(0.0, 0.12, size=config.items),
        conv_quality=rng.normal(0.0, 0.08, size=config.items),
        factor=rng.normal(0.0, 0.4, size=(config.items, FACTOR_DIM)) / FACTOR_DIM**0.25,
        conv_factor=rng.normal(0.0, 0.3, size=(config.items, FACTOR_DIM)) / FACTOR_DIM**0.25,
    )
    fx = dataclasses.replace(
        fx,
        log_price_mean=float(np.log(items["price"]).mean()),
        log_price_std=float(np.log(items["price"]).std()) or 1.0,
        log_popularity_mean=float(np.log1p(items["popularity"]).mean()),
        log_popularity_std=float(np.log1p(items["popularity"]).std()) or 1.0,
        log_activity_mean=float(np.log(users["activity"]).mean()),
        log_activity_std=float(np.log(users["activity"]).std()) or 1.0,
    )
    return TrueModel(users=user_table, items=item_table, effects=fx)


# ---- impressions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Impressions:
    """Who saw what, when and where, as index arrays sorted by timestamp."""

    user: np.ndarray
    item: np.ndarray
    timestamp: np.ndarray
    device: np.ndarray
    hour: np.ndarray
    position: np.ndarray


def draw_impressions(model: TrueModel, n: int, rng: Rng) -> Impressions:
    """n impressions: users by activity, items half by popularity and half from the user's tastes,
    hours on a daily cycle over DAYS days, the user's primary device most of the time, top
    positions more often than lower ones."""
    users, items = model.users, model.items
    user = rng.choice(len(users.age), size=n, p=users.activity / users.activity.sum())
    item = rng.choice(len(items.category), size=n, p=items.popularity / items.popularity.sum())
    personal = rng.random(n) < 0.5
    wanted = _draw_rows(rng, np.cumsum(users.taste, axis=1), user[personal])
    chosen = _draw_in_groups(rng, items.category, items.popularity, wanted)
    item[personal] = np.where(chosen >= 0, chosen, item[personal])
    hour_p = 1.0 + 0.8 * np.sin(2.0 * np.pi * (np.arange(HOURS) - 14) / 24.0)
    hour = rng.choice(HOURS, size=n, p=hour_p / hour_p.sum())
    day = rng.integers(0, DAYS, size=n)
    timestamp = START_TIMESTAMP + day * 86_400 + hour * 3_600 + rng.integers(0, 3_600, size=n)
    device = np.where(rng.random(n) < 0.8, users.device[user], rng.integers(0, len(DEVICES), n))
    position_p = 1.0 / np.arange(1, MAX_POSITION + 1) ** 0.6
    position = 1 + rng.choice(MAX_POSITION, size=n, p=position_p / position_p.sum())
    order = np.argsort(timestamp, kind="stable")
    return Impressions(
        user=user[order],
        item=item[order],
        timestamp=timestamp[order].astype(np.int64),
        device=device[order],
        hour=hour[order],
        position=position[order],
    )


def _click_logit(model: TrueModel, imp: Impressions) -> np.ndarray:
    return model.click_logit(imp.user, imp.item, imp.device, imp.hour, imp.position.astype(float))


def _solve_intercept(logit: np.ndarray, weight: np.ndarray, target: float) -> float:
    """b such that the `weight`-weighted mean of sigmoid(b + logit) equals target (bisection)."""
    low, high = -20.0, 20.0
    for _ in range(60):
        mid = 0.5 * (low + high)
        rate = float(np.average(_sigmoid(mid + logit), weights=weight))
        low, high = (mid, high) if rate < target else (low, mid)
    return 0.5 * (low + high)


def calibrate(model: TrueModel, rng: Rng) -> TrueModel:
    """Standardize the affinities and solve both intercepts on a sample of impressions.

    The sample has a fixed size, so the true model depends on the seed and the world's size but
    not on --rows. The CTR intercept makes the mean P(click) TARGET_CTR; the CVR intercept makes
    the mean P(conversion | click) over clicks (weighted by P(click)) TARGET_CVR.
    """
    imp = draw_impressions(model, CALIBRATION_ROWS, rng)
    affinity = model.affinity(imp.user, imp.item)
    conv_affinity = model.conv_affinity(imp.user, imp.item)
    fx = dataclasses.replace(
        model.effects,
        affinity_mean=float(affinity.mean()),
        affinity_std=float(affinity.std()) or 1.0,
        conv_affinity_mean=float(conv_affinity.mean()),
        conv_affinity_std=float(conv_affinity.std()) or 1.0,
    )
    model = dataclasses.replace(model, effects=fx)
    ones = np.ones(CALIBRATION_ROWS)
    b_click = _solve_intercept(_click_logit(model, imp), ones, TARGET_CTR)
    model = dataclasses.replace(model, effects=dataclasses.replace(fx, click_intercept=b_click))
    p_click = _sigmoid(_click_logit(model, imp))
    b_conv = _solve_intercept(
        model.conversion_logit(imp.user, imp.item, imp.device), p_click, TARGET_CVR
    )
    return dataclasses.replace(
        model, effects=dataclasses.replace(model.effects, conv_intercept=b_conv)
    )


def build_true_model(config: SynthConfig) -> TrueModel:
    """The calibrated true model for a config (deterministic by seed, independent of rows)."""
    world_rng, calibration_rng = _streams(config.seed)[:2]
    return calibrate(build_world(config, world_rng), calibration_rng)


def _streams(seed: int) -> list[Rng]:
    """Independent random streams: world, calibration, impressions, labels."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)]


# ---- tables ---------------------------------------------------------------------------------


def _names(prefix: str, count: int) -> pa.Array:
    return pa.array([f"{prefix}{n}" for n in range(count)], type=pa.string())


def _take(vocabulary: Sequence[str] | pa.Array, index: np.ndarray) -> pa.Array:
    """Strings of `vocabulary` at `index`, as a plain (not dictionary-encoded) string column."""
    values = vocabulary if isinstance(vocabulary, pa.Array) else pa.array(vocabulary, pa.string())
    return values.take(pa.array(index))


def users_table(model: TrueModel) -> pa.Table:
    """users.parquet: ids, demographics, activity and recent items (item ids, most recent last)."""
    users = model.users
    item_names = _names("i", len(model.items.category))
    recent = pa.ListArray.from_arrays(
        pa.array(users.recent_offsets.astype(np.int32)), _take(item_names, users.recent)
    )
    return pa.table(
        {
            "user_id": _names("u", len(users.age)),
            "age_bucket": _take(AGE_BUCKETS, users.age),
            "gender": _take(GENDERS, users.gender),
            "country": _take(COUNTRIES, users.country),
            "activity": pa.array(users.activity.astype(np.float32)),
            "recent_items": recent,
        }
    )


def items_table(model: TrueModel) -> pa.Table:
    """items.parquet: ids, category, brand, price and popularity."""
    items = model.items
    return pa.table(
        {
            "item_id": _names("i", len(items.category)),
            "category": _take(CATEGORIES, items.category),
            "brand": _take(brand_names(), items.brand),
            "price": pa.array(items.price.astype(np.float32)),
            "popularity": pa.array(items.popularity.astype(np.float32)),
        }
    )


def impressions_table(model: TrueModel, imp: Impressions, rng: Rng) -> pa.Table:
    """The impression log: ids, timestamp, context, drawn labels and the true probabilities."""
    p_click = _sigmoid(_click_logit(model, imp)).astype(np.float32)
    p_conv = _sigmoid(model.conversion_logit(imp.user, imp.item, imp.device)).astype(np.float32)
    click = rng.random(len(p_click)) < p_click
    conversion = click & (rng.random(len(p_conv)) < p_conv)
    return pa.table(
        {
            "user_id": _take(_names("u", len(model.users.age)), imp.user),
            "item_id": _take(_names("i", len(model.items.category)), imp.item),
            "timestamp": pa.array(imp.timestamp, type=pa.int64()),
            "device": _take(DEVICES, imp.device),
            "hour": pa.array(imp.hour.astype(np.int32)),
            "position": pa.array(imp.position.astype(np.int32)),
            "click": pa.array(click.astype(np.int8)),
            "conversion": pa.array(conversion.astype(np.int8)),
            "p_click": pa.array(p_click),
            "p_conversion": pa.array(p_conv),
        }
    )


def split_by_time(table: pa.Table) -> dict[str, pa.Table]:
    """train/val/test: the first 80%, next 10% and last 10% of the time span (rows sorted by time)."""
    timestamp = table.column("timestamp").to_numpy()
    span_end = START_TIMESTAMP + DAYS * 86_400
    parts = {}
    for name, start, end in SPLITS:
        low = START_TIMESTAMP + start * (span_end - START_TIMESTAMP)
        high = START_TIMESTAMP + end * (span_end - START_TIMESTAMP)
        first, last = np.searchsorted(timestamp, [low, high], side="left")
        if end == 1.0:
            last = len(timestamp)
        parts[name] = table.slice(int(first), int(last - first))
    return parts


def next_power_of_two(n: int) -> int:
    """The smallest power of two >= n (and >= 1)."""
    return 1 << max(0, math.ceil(math.log2(max(n, 1))))


def schema_dict(config: SynthConfig) -> dict[str, Any]:
    """The schema.yaml of a synthetic click log: features by entity, ctr, cvr and ctcvr."""
    hours = [str(h) for h in range(HOURS)]
    features: list[dict[str, Any]] = [
        {"name": "user_id", "type": "categorical", "entity": "user",
         "num_buckets": next_power_of_two(2 * config.users), "embedding_dim": 16},
        {"name": "age_bucket", "type": "categorical", "entity": "user",
         "vocabulary": list(AGE_BUCKETS), "embedding_dim": 4},
        {"name": "gender", "type": "categorical", "entity": "user",
         "vocabulary": list(GENDERS), "embedding_dim": 4},
        {"name": "country", "type": "categorical", "entity": "user",
         "vocabulary": list(COUNTRIES), "embedding_dim": 8},
        {"name": "activity", "type": "numeric", "entity": "user", "transform": "log1p"},
        {"name": "recent_items", "type": "sequence", "entity": "user",
         "max_length": MAX_RECENT, "shared_embedding": "item_id"},
        {"name": "item_id", "type": "categorical", "entity": "item",
         "num_buckets": next_power_of_two(2 * config.items), "embedding_dim": 16},
        {"name": "category", "type": "categorical", "entity": "item",
         "vocabulary": list(CATEGORIES), "embedding_dim": 8},
        {"name": "brand", "type": "categorical", "entity": "item",
         "vocabulary": brand_names(), "embedding_dim": 8},
        {"name": "price", "type": "numeric", "entity": "item", "transform": "log1p"},
        {"name": "popularity", "type": "numeric", "entity": "item", "transform": "log1p"},
        {"name": "device", "type": "categorical", "entity": "context",
         "vocabulary": list(DEVICES), "embedding_dim": 4},
        {"name": "hour", "type": "categorical", "entity": "context",
         "vocabulary": hours, "embedding_dim": 4},
        {"name": "position", "type": "numeric", "entity": "context", "default": 1.0},
    ]  # fmt: skip
    return {
        "features": features,
        "tasks": [
            {"name": "ctr", "label": "click"},
            {"name": "cvr", "label": "conversion", "condition": "click"},
        ],
        "products": [{"name": "ctcvr", "of": ["ctr", "cvr"]}],
    }


# ---- the whole job --------------------------------------------------------------------------


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


def generate(config: SynthConfig, out: str | Path, progress: Progress = _quiet) -> SynthSummary:
    """Write users, items, train/val/test impressions, schema.yaml and the truth to `out`."""
    from ranker.schema import Schema

    config.validate()
    out_dir = _prepare_out_dir(out)
    started = time.perf_counter()
    _, _, impression_rng, label_rng = _streams(config.seed)
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
