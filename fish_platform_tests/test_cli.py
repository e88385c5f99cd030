"""The `fish-platform` console command, run as a user runs it."""

import os
import subprocess
import sys
from pathlib import Path

from fish_platform.data.store import LocalImageStore

CLI = [os.path.join(os.path.dirname(sys.executable), "fish-platform")]


def _run(*args, env=None, timeout=120):
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


def test_sample_data_writes_kaggle_layout_and_says_synthetic(tmp_path):
    out = tmp_path / "s"
    result = _run(
        "sample-data",
        str(out),
        "--species",
        "3",
        "--per-species",
        "5",
        "--corrupt",
        "2",
        "--duplicates",
        "1",
        "--size",
        "64x48",
        "--seed",
        "3",
    )
    assert result.returncode == 0, result.stderr
    assert "SYNTHETIC" in result.stdout
    images = list(LocalImageStore(out).list_images())
    assert len(images) == 3 * 5 + 2 + 1
    assert len({i.species for i in images}) == 3
    assert "synthetic" in (out / "README.txt").read_text().lower()


def test_sample_data_rejects_a_bad_size(tmp_path):
    result = _run("sample-data", str(tmp_path / "s"), "--size", "big")
    assert result.returncode == 2 and "WxH" not in result.stdout
    assert "size must look like" in result.stderr


def test_download_kaggle_without_credentials_is_one_clear_line_and_exit_2(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "HOME": str(home),
        "KAGGLE_USERNAME": "",
        "KAGGLE_KEY": "",
        "KAGGLE_API_TOKEN": "",
        "KAGGLE_CONFIG_DIR": str(home / ".kaggle"),
    }
    result = _run("download-kaggle", str(tmp_path / "k"), env=env)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "KAGGLE" in lines[0]
    assert not Path(tmp_path / "k").exists() or not any(Path(tmp_path / "k").iterdir())


def test_doctor_reports_java(tmp_path):
    result = _run("doctor", env={"FISH_DATA_DIR": str(tmp_path)})
    assert result.returncode == 0 and "java:" in result.stdout
