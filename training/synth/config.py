"""What `mtrank synth` generates: sizes, seed, relatedness, the target rates, the random streams."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ranker.errors import MtrankError

TARGET_CTR = 0.05
TARGET_CVR = 0.08

Rng = np.random.Generator


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


def random_streams(seed: int) -> list[Rng]:
    """Independent random streams: world, calibration, impressions, labels."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)]
