"""Drawing impressions: who saw what, when and where, over DAYS days from START_TIMESTAMP.

Users come in proportion to their activity; items half by popularity and half from the user's
tastes; hours on a daily cycle; the user's primary device most of the time; top positions more
often than lower ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.synth.config import Rng
from training.synth.true_model import TrueModel
from training.synth.vocabulary import DEVICES, HOURS
from training.synth.world import draw_in_groups, draw_rows

MAX_POSITION = 20
START_TIMESTAMP = 1_767_225_600  # 2026-01-01T00:00:00Z
DAYS = 28


@dataclass(frozen=True)
class Impressions:
    """Who saw what, when and where, as index arrays sorted by timestamp."""

    user: np.ndarray
    item: np.ndarray
    timestamp: np.ndarray
    device: np.ndarray
    hour: np.ndarray
    position: np.ndarray


def hour_probabilities() -> np.ndarray:
    """P(hour) of an impression, hours 0..23: a daily cycle peaking in the evening."""
    weight = 1.0 + 0.8 * np.sin(2.0 * np.pi * (np.arange(HOURS) - 14) / 24.0)
    return weight / weight.sum()


def draw_impressions(model: TrueModel, n: int, rng: Rng) -> Impressions:
    """n impressions: users by activity, items half by popularity and half from the user's tastes,
    hours on a daily cycle over DAYS days, the user's primary device most of the time, top
    positions more often than lower ones."""
    users, items = model.users, model.items
    user = rng.choice(len(users.age), size=n, p=users.activity / users.activity.sum())
    item = rng.choice(len(items.category), size=n, p=items.popularity / items.popularity.sum())
    personal = rng.random(n) < 0.5
    wanted = draw_rows(rng, np.cumsum(users.taste, axis=1), user[personal])
    chosen = draw_in_groups(rng, items.category, items.popularity, wanted)
    item[personal] = np.where(chosen >= 0, chosen, item[personal])
    hour = rng.choice(HOURS, size=n, p=hour_probabilities())
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


def click_logit(model: TrueModel, imp: Impressions) -> np.ndarray:
    """The true click logit of every impression, at the position it was shown."""
    return model.click_logit(imp.user, imp.item, imp.device, imp.hour, imp.position.astype(float))
