"""Every parameter of the true model: the users' and items' tables and the logits' coefficients.

The vocabularies these index into are in `vocabulary.py`, the formulas that use them in
`true_model.py`, and how they are drawn in `world.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FACTOR_DIM = 8


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
    """The coefficients of the click and conversion logits (see `true_model.py`)."""

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
