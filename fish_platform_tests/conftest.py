"""Shared fixtures: paths, a Spark session, small image folders, Dagster resources."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fish_platform_tests.helpers import COLORS, real_data_path, write_image

# Fake credentials for the loopback S3 server; set before any Spark worker starts so workers inherit them.
for _key, _value in {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}.items():
    os.environ.setdefault(_key, _value)


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The Fish4Knowledge photos (FISH_REAL_DATA_DIR, default ../shared/data/fish4knowledge)."""
    path = real_data_path()
    if not path.is_dir():
        pytest.skip(f"real fish photos not found at {path} (set FISH_REAL_DATA_DIR to run this test)")
    return path


@pytest.fixture(scope="session")
def spark():
    """One local Spark session for the whole test run (start-up costs seconds)."""
    from fish_platform.data.spark import JavaNotFoundError, build_spark_session

    try:
        session = build_spark_session("local[2]", "fish-platform-tests")
    except JavaNotFoundError as exc:
        pytest.skip(str(exc))
    yield session
    session.stop()


@pytest.fixture
def colour_images(tmp_path: Path) -> Path:
    """Four species x 12 images, Kaggle layout, some nested like the real archive."""
    root = tmp_path / "raw"
    for s_index, (species, color) in enumerate(COLORS.items()):
        folder = root / species / species if s_index % 2 else root / species
        for i in range(12):
            suffix = ".jpg" if i % 3 == 0 else ".png"
            write_image(folder / f"{i:03d}{suffix}", color, (40 + i, 36 + 2 * i), seed=100 * s_index + i)
    return root


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "fish-data"
    path.mkdir()
    yield path


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """An S3-compatible server on loopback (moto in server mode) for the whole session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
