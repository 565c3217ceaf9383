"""Small synthetic click logs shared by the training tests (made once per session by `mtrank synth`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.cli import main


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    code = main(
        [
            "synth",
            "--out",
            str(out),
            "--rows",
            "30000",
            "--users",
            "600",
            "--items",
            "300",
            "--seed",
            "3",
        ]
    )
    assert code == 0
    return out
