"""`mtrank features`: materialize and get, JSON on stdout, one-line errors with exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from training.cli import main

MakeDir = Callable[..., Path]


@pytest.fixture(autouse=True)
def _no_redis_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --redis, the CLI reads REDIS_URL; these tests set it themselves where they use it."""
    monkeypatch.delenv("REDIS_URL", raising=False)


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err  # one line, no traceback
    return err[0]


def test_materialize_into_the_embedded_store_then_get_from_another_process(
    make_data_dir: MakeDir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_data_dir(tmp_path / "data")
    assert main(["features", "materialize", "--data", str(data)]) == 0
    out, err = capsys.readouterr()
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["user"] == {"rows": 3, "record_bytes": 4 + 1 + 2}  # age, segment, recent
    assert summary["item"] == {"rows": 2, "record_bytes": 4 + 1}  # price, category
    assert (summary["version"], summary["previous_version"], summary["deleted_keys"]) == (
        1,
        None,
        0,
    )
    assert summary["store"] == f"embedded store {(data / 'online_store').resolve()}"
    assert "items: 2/2 rows" in err  # progress goes to stderr

    assert main(["features", "materialize", "--data", str(data)]) == 0  # again: flips to 2
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["version"], summary["previous_version"], summary["deleted_keys"]) == (2, 1, 6)

    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    command = [sys.executable, "-m", "training.cli", "features", "get", "--data", str(data)]
    command += ["--user", "1", "--items", "i1,zz"]
    got = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert json.loads(got.stdout) == {
        "user": {"age": 30.0, "segment": "a", "recent": ["7", "8"]},
        "items": {"i1": {"price": pytest.approx(0.1, rel=1e-7), "category": "7"}, "zz": None},
    }


def test_materialize_goes_to_redis_url_when_set(
    make_data_dir: MakeDir,
    tmp_path: Path,
    redis_url: str,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    data = make_data_dir(tmp_path / "data")
    args = ["features", "materialize", "--data", str(data), "--namespace", namespace]
    assert main([*args, "--ttl", "3600"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["namespace"] == namespace
    assert not (data / "online_store").exists()
    client = redis.Redis.from_url(redis_url)
    assert client.get(f"{namespace}:current") == b"1"
    assert 0 < client.ttl(f"{namespace}:v1:user:1") <= 3600
    client.close()

    assert main(["features", "get", "--namespace", namespace, "--user", "2", "--items", "i2"]) == 0
    assert json.loads(capsys.readouterr().out) == {"user": {"segment": "b"}, "items": {"i2": {}}}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "{tmp}/nowhere"], "{tmp}/nowhere: no such data directory"),
        (["--data", "{tmp}/data", "--redis", "http://x"], "bad Redis URL 'http://x'"),
        (
            ["--data", "{tmp}/data", "--redis", "redis://:pw@127.0.0.1:1/0"],
            "store unreachable: redis://:***@127.0.0.1:1/0: ",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(
    args: list[str],
    message: str,
    make_data_dir: MakeDir,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    make_data_dir(tmp_path / "data")
    args = [a.format(tmp=tmp_path) for a in args]
    assert main(["features", "materialize", *args]) == 2
    line = _error_line(capsys)
    assert line.startswith("mtrank features: error: ")
    assert message.format(tmp=tmp_path) in line


def test_a_bad_column_is_one_line_naming_file_and_column(
    make_data_dir: MakeDir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_data_dir(tmp_path / "data", items={"item_id": ["i1"], "category": ["x"]})
    assert main(["features", "materialize", "--data", str(data)]) == 2
    assert f"{data}/items.parquet: no column 'price'" in _error_line(capsys)
    assert not (data / "online_store").exists()  # checked before the store is opened


@pytest.mark.parametrize("ttl", ["0", "soon"])
def test_a_bad_ttl_is_a_usage_error(
    ttl: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["features", "materialize", "--data", str(tmp_path), "--ttl", ttl])
    assert exit_.value.code == 2
    assert f"--ttl: must be a whole number of seconds >= 1, got '{ttl}'" in capsys.readouterr().err


def test_a_bad_namespace_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(
            ["features", "materialize", "--data", str(tmp_path), "--namespace", f"a:{uuid.uuid4()}"]
        )
    assert exit_.value.code == 2
    assert "--namespace: namespace must be" in capsys.readouterr().err


def test_get_without_a_store_says_what_to_give(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["features", "get", "--user", "u1"]) == 2
    assert "give --data DIR (embedded store) or --redis URL" in _error_line(capsys)
