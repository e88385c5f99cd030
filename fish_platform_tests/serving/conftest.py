"""Fixtures for the service: a real redis-server, a real MLflow registry, the real service process.

One service process serves the whole session (it costs ~20 s to start): it starts *before* any
model is registered (so the not-ready state can be checked), then version 1 is registered and
promoted and the service picks it up by polling the alias every second.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from fish_platform_tests.helpers import REPO_ROOT, real_data_path
from fish_platform_tests.processes import stop_tree
from fish_platform_tests.serving.serving_helpers import (
    LABELS_V1,
    TEST_OUTPUT,
    Registry,
    png_bytes,
    promote,
    register_tiny_model,
)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SERVICE_START_TIMEOUT_S = 240


def service_env(registry: Registry, workdir: Path, **settings: str) -> dict[str, str]:
    """The environment of a service under test: this process' own minus every FISH_/MLFLOW_/REDIS_
    setting, then ``registry``, a one-second alias poll, BentoML's home and scratch under
    ``workdir``, and ``settings`` (``FISH_...`` names to values) on top."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("FISH_", "MLFLOW_", "REDIS_"))},
        "MLFLOW_TRACKING_URI": registry.tracking_uri,
        "FISH_MODEL_NAME": registry.model_name,
        "FISH_MODEL_POLL_SECONDS": "1",
        "FISH_DATA_DIR": str(workdir / "scratch"),
        "BENTOML_HOME": str(workdir / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "True",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        **settings,
    }


def launch_service(env: dict[str, str], port: int, log_path: Path) -> subprocess.Popen:
    """``bentoml serve serving.service:FishService`` on ``port`` with ``env``, its output in
    ``log_path``, in a session of its own (stop it with ``fish_platform_tests.processes.stop_tree``
    or ``kill_tree``)."""
    with log_path.open("wb") as log_file:
        return subprocess.Popen(
            [str(Path(sys.executable).with_name("bentoml")), "serve", "serving.service:FishService",
             "--port", str(port)],  # fmt: skip
            cwd=REPO_ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def metric_samples(metrics_text: str, name: str) -> dict[tuple, float]:
    """``{sorted label pairs: value}`` of one sample name in a /metrics text."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(metrics_text)
        for s in family.samples
        if s.name == name
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RedisServer:
    """A real ``redis-server`` on a free port, which tests may stop and start again."""

    port: int
    workdir: Path
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server not installed (apt-get install -y redis-server)")
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def client(self):
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=1)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """A fresh sqlite registry whose schema exists before the service starts.

    The service opens the store as soon as it starts polling for the alias; if it and this process
    both found no database, one could read the other's half-migrated schema and fail with
    "out-of-date database schema". Creating it here, alone, leaves nothing to race.
    """
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    registry = Registry(
        tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        artifact_location=(root / "artifacts").as_uri(),
        model_name="fish-serving-test",
    )
    MlflowClient(registry.tracking_uri, registry_uri=registry.tracking_uri).search_registered_models()
    return registry


@dataclass
class ServiceHandle:
    url: str
    process: subprocess.Popen
    log_path: Path
    registry: Registry
    versions: dict[str, tuple[str, ...]] = field(default_factory=dict)  # version -> labels
    version: str | None = None  # the version promoted last
    before_model: dict[str, httpx.Response] = field(default_factory=dict)  # answers before any model

    def client(self, timeout: float = 30) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)

    def log_tail(self, n: int = 60) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def wait_for(self, path: str, status: int, timeout: float) -> httpx.Response:
        deadline = time.monotonic() + timeout
        last: httpx.Response | str = "no answer"
        with self.client(timeout=10) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"service exited with {self.process.returncode}:\n{self.log_tail()}")
                try:
                    last = client.get(path)
                    if last.status_code == status:
                        return last
                except httpx.HTTPError as exc:
                    last = repr(exc)
                time.sleep(0.5)
        raise TimeoutError(f"{path} never answered {status} (last: {last}):\n{self.log_tail()}")


@pytest.fixture(scope="session")
def bare_service(
    tmp_path_factory: pytest.TempPathFactory, registry: Registry, redis_server: RedisServer
) -> Iterator[ServiceHandle]:
    """The service process, started before any model exists in the registry."""
    workdir = tmp_path_factory.mktemp("service")
    port = free_port()
    env = service_env(
        registry,
        workdir,
        FISH_DATA_DIR=str(workdir / "fish-data"),
        REDIS_URL=redis_server.url,
        FISH_CACHE_TTL_SECONDS="600",
    )
    log_path = workdir / "service.log"
    process = launch_service(env, port, log_path)
    handle = ServiceHandle(f"http://127.0.0.1:{port}", process, log_path, registry)
    try:
        handle.wait_for("/livez", 200, SERVICE_START_TIMEOUT_S)
        yield handle
    finally:
        stop_tree(process)
        TEST_OUTPUT.mkdir(exist_ok=True)
        shutil.copyfile(log_path, TEST_OUTPUT / "serving-service.log")


@pytest.fixture(scope="session")
def service(bare_service: ServiceHandle) -> ServiceHandle:
    """The service with version 1 (untrained B0 at 32 px, LABELS_V1) promoted and loaded.

    Before registering, it records how the service answered without a model (``before_model``).
    """
    if bare_service.version is None:
        with bare_service.client() as client:  # the not-ready state, checked in test_service
            bare_service.before_model = {
                "readyz": client.get("/readyz"),
                "predict": client.post("/predict", files={"file": ("f.png", png_bytes(1), "image/png")}),
                "livez": client.get("/livez"),
            }
        version = register_tiny_model(bare_service.registry, LABELS_V1, image_size=32, seed=0)
        promote(bare_service.registry, version)
        bare_service.versions[version] = LABELS_V1
        bare_service.version = version
        bare_service.wait_for("/readyz", 200, 120)
    return bare_service


@pytest.fixture(scope="session")
def fish_photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real fish photo from FISH_REAL_DATA_DIR when present, else a generated image."""
    root = real_data_path()
    photos = sorted(root.glob("*/*.png")) + sorted(root.glob("*/*.jpg")) if root.is_dir() else []
    if photos:
        return photos[len(photos) // 3]
    path = tmp_path_factory.mktemp("photo") / "generated-fish.png"
    path.write_bytes(png_bytes(12345, (160, 120)))
    return path
