"""Calibrating the true model: standardize the affinities, solve the intercepts for target rates.

The sample of impressions has a fixed size (CALIBRATION_ROWS), so the true model depends on the
seed and the world's size but not on --rows.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from training.synth.config import TARGET_CTR, TARGET_CVR, Rng, SynthConfig, random_streams
from training.synth.impressions import click_logit, draw_impressions
from training.synth.true_model import TrueModel, sigmoid
from training.synth.world import build_world

CALIBRATION_ROWS = 100_000


def _solve_intercept(logit: np.ndarray, weight: np.ndarray, target: float) -> float:
    """b such that the `weight`-weighted mean of sigmoid(b + logit) equals target (bisection)."""
    low, high = -20.0, 20.0
    for _ in range(60):
        mid = 0.5 * (low + high)
        rate = float(np.average(sigmoid(mid + logit), weights=weight))
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
    b_click = _solve_intercept(click_logit(model, imp), ones, TARGET_CTR)
    model = dataclasses.replace(model, effects=dataclasses.replace(fx, click_intercept=b_click))
    p_click = sigmoid(click_logit(model, imp))
    b_conv = _solve_intercept(
        model.conversion_logit(imp.user, imp.item, imp.device), p_click, TARGET_CVR
    )
    return dataclasses.replace(
        model, effects=dataclasses.replace(model.effects, conv_intercept=b_conv)
    )


def build_true_model(config: SynthConfig) -> TrueModel:
    """The calibrated true model for a config (deterministic by seed, independent of rows)."""
    world_rng, calibration_rng = random_streams(config.seed)[:2]
    return calibrate(build_world(config, world_rng), calibration_rng)
