"""Kaggle download errors: no credentials, bad credentials, and no way to reach Kaggle."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from fish_platform.data.kaggle import KaggleDownloadError, download_kaggle, species_root

KAGGLE_VARIABLES = (
    "KAGGLE_USERNAME",
    "KAGGLE_KEY",
    "KAGGLE_API_TOKEN",
    "KAGGLE_CONFIG_DIR",
    "KAGGLE_API_ENVIRONMENT",
    "KAGGLE_KERNEL_RUN_TYPE",
    "KAGGLEHUB_CACHE",
)


@pytest.fixture
def no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An environment where kagglehub finds no credentials: empty home and config folder."""
    for name in KAGGLE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    (home / ".kaggle").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(home / ".kaggle"))
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "cache"))
    return home


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound, never listening."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


def use_proxy(monkeypatch: pytest.MonkeyPatch, port: int) -> None:
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTPS_PROXY", "https_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{port}")


def test_missing_credentials_are_reported_before_any_network(
    no_credentials: Path, closed_port: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_proxy(monkeypatch, closed_port)  # were the network tried first, the error would be about it
    dest = tmp_path / "kaggle"
    with pytest.raises(KaggleDownloadError) as caught:
        download_kaggle(dest)
    message = str(caught.value)
    assert "no Kaggle credentials" in message and "\n" not in message
    for variable in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY", "kaggle.json"):
        assert variable in message
    assert not dest.exists()


def test_unreadable_kaggle_json_is_reported(no_credentials: Path, tmp_path: Path) -> None:
    (no_credentials / ".kaggle" / "kaggle.json").write_text("not json")
    with pytest.raises(KaggleDownloadError, match="credentials are invalid"):
        download_kaggle(tmp_path / "kaggle")


@pytest.mark.timeout(60)  # a hang here would mean the reachability probe is not bounded
def test_fake_credentials_and_refused_connection_fail(
    no_credentials: Path, closed_port: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KAGGLE_USERNAME", "nobody")
    monkeypatch.setenv("KAGGLE_KEY", "0" * 32)
    use_proxy(monkeypatch, closed_port)
    with pytest.raises(KaggleDownloadError, match="cannot reach Kaggle"):
        download_kaggle(tmp_path / "kaggle", timeout=3)
    assert not (tmp_path / "kaggle").exists()


@pytest.mark.timeout(120)
def test_fake_token_without_kaggle_fails_with_one_line(
    no_credentials: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The real network: offline here, so unreachable; with internet, Kaggle rejects the token."""
    monkeypatch.setenv("KAGGLE_API_TOKEN", "fake-token-for-tests")
    with pytest.raises(KaggleDownloadError) as caught:
        download_kaggle(tmp_path / "kaggle", timeout=3)
    assert "\n" not in str(caught.value)


def test_species_root_skips_the_archive_wrappers(tmp_path: Path) -> None:
    inner = tmp_path / "Fish_Dataset" / "Fish_Dataset"
    for species in ("Trout", "Sea Bass"):
        (inner / species / species).mkdir(parents=True)
        (inner / species / species / "00001.png").write_bytes(b"png")
        (inner / species / f"{species} GT").mkdir()
    (inner / "README.txt").write_text("readme")
    (tmp_path / ".complete").mkdir()  # kagglehub's completion markers
    assert species_root(tmp_path) == inner

    single = tmp_path / "single"
    (single / "wrapper" / "Trout").mkdir(parents=True)
    (single / "wrapper" / "Trout" / "1.jpg").write_bytes(b"jpg")
    assert species_root(single) == single / "wrapper"
