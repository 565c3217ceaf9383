"""The generator's true model: P(click) and P(conversion | click) for any user, item and context.

Per impression of item i to user u in context (device d, hour h, position p):

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
clicks is `TARGET_CVR` for any seed and size (`calibration.py`). Position moves clicks only, never
conversions, and conversions are only observed on clicks (sample selection bias).

`TrueModel.save` writes every parameter to `truth.npz` (and the vocabularies and scalars to
`truth.json`); `TrueModel.load` reads them back.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ranker.errors import MtrankError
from training.synth.config import TARGET_CTR, TARGET_CVR, SynthConfig
from training.synth.parameters import Effects, ItemTable, UserTable
from training.synth.vocabulary import DEVICES, HOURS, vocabularies

TRUTH_FORMAT = 1


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
        u, i = self._numbers(user_ids, item_ids)
        logit = self.click_logit(
            u, i, _device_index(device), _hour_index(hour), _position_value(position)
        )
        return sigmoid(logit).astype(np.float32)

    def p_conversion(
        self,
        user_ids: Sequence[str] | np.ndarray,
        item_ids: Sequence[str] | np.ndarray,
        device: Sequence[str] | np.ndarray,
    ) -> np.ndarray:
        """P(conversion | click) as float32; it does not depend on the hour or the position."""
        u, i = self._numbers(user_ids, item_ids)
        return sigmoid(self.conversion_logit(u, i, _device_index(device))).astype(np.float32)

    def _numbers(
        self, user_ids: Sequence[str] | np.ndarray, item_ids: Sequence[str] | np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The user and item numbers of ids like `u17` and `i4` (an id not of this world raises)."""
        u = parse_ids(user_ids, "u", len(self.users.age), "user_id")
        i = parse_ids(item_ids, "i", len(self.items.category), "item_id")
        return u, i

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
            "vocabularies": vocabularies(),
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


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function, 1 / (1 + exp(-x))."""
    return 1.0 / (1.0 + np.exp(-x))
