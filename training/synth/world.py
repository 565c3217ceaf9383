"""Drawing the synthetic world: users, items, their latent parameters and the logits' coefficients.

`build_world` gives a `TrueModel` whose intercepts and standardizations of the affinities are still
placeholders; `calibration.py` solves them. Interaction tables are low rank (what embeddings and an
MLP learn); each brand is nested in a category, and brands of a category look alike.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from training.synth.config import Rng, SynthConfig
from training.synth.parameters import FACTOR_DIM, Effects, ItemTable, UserTable
from training.synth.true_model import TrueModel
from training.synth.vocabulary import (
    AGE_BUCKETS,
    BRANDS_PER_CATEGORY,
    CATEGORIES,
    COUNTRIES,
    DEVICES,
    GENDERS,
    HOURS,
)

MAX_RECENT = 20


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


def draw_in_groups(
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


def draw_rows(rng: Rng, cdf: np.ndarray, rows: np.ndarray) -> np.ndarray:
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
    wanted = draw_rows(rng, np.cumsum(taste, axis=1), owner)
    flat = draw_in_groups(rng, category, popularity, wanted)
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
