"""How much of the CVR oracle is learnable from the logged clicks: a reference for the quality table.

The generator's conversion logit (training/synth/true_model.py) is a sum of terms in observable features:
price (scaled by a per-country and per-activity sensitivity), category, brand, device, and two
low-rank tables (age x category, country x category), plus small per-id latent terms. This script
fits a logistic regression on exactly those observable terms (one-hot tables, price crosses) to the
clicked training rows, with the L2 strength picked on the validation clicks, and reports its CVR
AUC against the oracle's (the true `p_conversion`) on the same rows. It also scores CTCVR as the
oracle CTR times this CVR, i.e. what a model with a perfect CTR and this CVR would reach.

A correctly specified linear model knows the functional form, which no network is told: read its
AUC as an upper reference for what ~1,200 training conversions allow, not as a baseline to beat.

    python benchmarks/cvr_reference.py --data DIR     # a `mtrank synth` output (default: 400k rows)

Needs no model training (numpy; TensorFlow is imported only by the shared data readers). Prints a
table and writes JSON to --out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import synthetic

from training.data import read_columns
from training.metrics import auc, expected_auc

PENALTIES = (1.0, 3.0, 10.0, 30.0, 100.0)


class Encoder:
    """The conversion logit's observable terms of (user, item, device) rows, as a dense matrix."""

    def __init__(self, data: Path, devices: np.ndarray) -> None:
        users = read_columns(
            data / "users.parquet", ["user_id", "age_bucket", "country", "activity"]
        )
        items = read_columns(data / "items.parquet", ["item_id", "category", "brand", "price"])
        self.user_row = {u: i for i, u in enumerate(users["user_id"].tolist())}
        self.item_row = {v: i for i, v in enumerate(items["item_id"].tolist())}
        self.age, self.n_age = _codes(users["age_bucket"])
        self.country, self.n_country = _codes(users["country"])
        self.category, self.n_category = _codes(items["category"])
        self.brand, self.n_brand = _codes(items["brand"])
        self.log_price = _standardize(np.log(items["price"].astype(float)))
        self.log_activity = _standardize(np.log1p(users["activity"].astype(float)))
        self.devices = np.unique(devices.astype(str))

    def matrix(self, user_ids: np.ndarray, item_ids: np.ndarray, device: np.ndarray) -> np.ndarray:
        u = np.array([self.user_row[x] for x in user_ids.tolist()])
        i = np.array([self.item_row[x] for x in item_ids.tolist()])
        device_code = np.searchsorted(self.devices, device.astype(str))
        price, country, category = self.log_price[i], self.country[u], self.category[i]
        return np.hstack(
            [
                np.ones((len(u), 1)),
                price[:, None],
                _one_hot(country, self.n_country) * price[:, None],
                (self.log_activity[u] * price)[:, None],
                _one_hot(category, self.n_category),
                _one_hot(self.brand[i], self.n_brand),
                _one_hot(device_code, len(self.devices)),
                _one_hot(self.age[u] * self.n_category + category, self.n_age * self.n_category),
                _one_hot(country * self.n_category + category, self.n_country * self.n_category),
            ]
        )


def fit_logistic(x: np.ndarray, y: np.ndarray, penalty: float, steps: int = 25) -> np.ndarray:
    """L2-penalized logistic regression by Newton's method (the intercept is penalized too)."""
    w = np.zeros(x.shape[1])
    eye = np.eye(x.shape[1])
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(x @ w)))
        gradient = x.T @ (p - y) + penalty * w
        hessian = (x * (p * (1.0 - p))[:, None]).T @ x + penalty * eye
        w -= np.linalg.solve(hessian, gradient)
    return w


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    synthetic.add_arguments(parser)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cvr_reference.json"))
    args = parser.parse_args()
    data = synthetic.data_dir(args)

    columns = ["user_id", "item_id", "device", "click", "conversion", "p_click", "p_conversion"]
    splits = {
        name: read_columns(data / f"{name}.parquet", columns) for name in ("train", "val", "test")
    }
    encoder = Encoder(data, splits["train"]["device"])
    clicked = {name: split["click"] == 1 for name, split in splits.items()}

    def features(name: str, rows: np.ndarray | None = None) -> np.ndarray:
        split = splits[name]
        pick = slice(None) if rows is None else rows
        return encoder.matrix(split["user_id"][pick], split["item_id"][pick], split["device"][pick])

    x_train = features("train", clicked["train"])
    y_train = splits["train"]["conversion"][clicked["train"]].astype(float)
    x_val = features("val", clicked["val"])
    y_val = splits["val"]["conversion"][clicked["val"]].astype(float)
    fits = {penalty: fit_logistic(x_train, y_train, penalty) for penalty in PENALTIES}
    val_auc = {penalty: auc(y_val, x_val @ w) for penalty, w in fits.items()}
    best = max(val_auc, key=lambda penalty: val_auc[penalty])

    result: dict[str, Any] = {
        "data": str(data),
        "train_clicks": int(clicked["train"].sum()),
        "train_conversions": int(y_train.sum()),
        "features": x_train.shape[1],
        "val_auc_by_penalty": {str(k): v for k, v in val_auc.items()},
        "penalty": best,
        "splits": {},
    }
    print(
        f"logistic regression on the true CVR terms ({x_train.shape[1]} columns), "
        f"{int(y_train.sum())} training conversions in {int(clicked['train'].sum())} clicks; "
        f"L2 {best} chosen on validation"
    )
    print(
        f"{'split':<6} {'CVR AUC':>8} {'oracle':>8} {'/oracle':>8} {'E/oracle':>8} "
        f"{'CTCVR*':>8} {'/oracle':>8} {'E/oracle':>8}"
    )
    for name in ("val", "test"):
        split, rows = splits[name], clicked[name]
        conversions = split["conversion"].astype(float)
        cvr = 1.0 / (1.0 + np.exp(-(features(name) @ fits[best])))
        both = split["click"].astype(float) * conversions
        truth_ctcvr = split["p_click"] * split["p_conversion"]
        oracle_ctcvr = auc(both, truth_ctcvr)
        row = {
            "cvr_auc": auc(conversions[rows], cvr[rows]),
            "cvr_oracle": auc(conversions[rows], split["p_conversion"][rows]),
            "ctcvr_oracle_ctr_times_cvr": auc(both, split["p_click"] * cvr),
            "ctcvr_oracle": oracle_ctcvr,
            # the same two ratios expected over label draws from the true probabilities (no label noise)
            "cvr_expected_ratio": expected_auc(split["p_conversion"][rows], cvr[rows])
            / expected_auc(split["p_conversion"][rows], split["p_conversion"][rows]),
            "ctcvr_oracle_ctr_times_cvr_expected_ratio": expected_auc(
                truth_ctcvr, split["p_click"] * cvr
            )
            / expected_auc(truth_ctcvr, truth_ctcvr),
            "conversions": int(conversions[rows].sum()),
        }
        result["splits"][name] = row
        print(
            f"{name:<6} {row['cvr_auc']:>8.4f} {row['cvr_oracle']:>8.4f} "
            f"{row['cvr_auc'] / row['cvr_oracle']:>8.3f} {row['cvr_expected_ratio']:>8.3f} "
            f"{row['ctcvr_oracle_ctr_times_cvr']:>8.4f} "
            f"{row['ctcvr_oracle_ctr_times_cvr'] / oracle_ctcvr:>8.3f} "
            f"{row['ctcvr_oracle_ctr_times_cvr_expected_ratio']:>8.3f}"
        )
    print(
        "CTCVR*: the oracle's CTR times this CVR; E/oracle: AUC expected over label draws from the "
        "true probabilities, over the oracle's"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


def _codes(values: np.ndarray) -> tuple[np.ndarray, int]:
    levels, codes = np.unique(values.astype(str), return_inverse=True)
    return codes, len(levels)


def _standardize(values: np.ndarray) -> np.ndarray:
    return (values - values.mean()) / values.std()


def _one_hot(codes: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros((len(codes), n))
    out[np.arange(len(codes)), codes] = 1.0
    return out


if __name__ == "__main__":
    main()
