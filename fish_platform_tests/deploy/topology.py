"""The production topology on one machine: real engines, each in its own processes.

- a Spark standalone cluster from pyspark's own jars: one master and two workers, separate JVMs,
  each worker with its own work and scratch directories;
- a Dagster deployment: a gRPC code server (``dagster api grpc``) and the real ``dagster-daemon``
  (sensors, the run queue), the default run launcher starting every run in a new process;
- the platform configured only through its settings (``FISH_*``, ``MLFLOW_*``, ``AWS_*``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from fish_platform_tests.helpers import REPO_ROOT
from fish_platform_tests.processes import stop_tree

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, log: Path, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"port {port} never opened:\n{log.read_text()[-4000:]}")


def stop(process: subprocess.Popen | None) -> None:
    """SIGTERM the process group, then SIGKILL whatever of it and its descendants is left."""
    stop_tree(process)


def start(args: list[str], env: dict[str, str], log: Path, cwd: Path = REPO_ROOT) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen(
            args, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


@dataclass
class SparkCluster:
    """``spark://127.0.0.1:<port>`` with two one-core workers."""

    root: Path
    port: int = field(default_factory=free_port)
    ui_port: int = field(default_factory=free_port)
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def master_url(self) -> str:
        return f"spark://127.0.0.1:{self.port}"

    def _spark_class(self) -> Path:
        import pyspark

        return Path(pyspark.__file__).parent / "bin" / "spark-class"

    def _env(self, name: str) -> dict[str, str]:
        import pyspark

        scratch = self.root / name / "local"
        scratch.mkdir(parents=True, exist_ok=True)
        return {
            **os.environ,
            "SPARK_HOME": str(Path(pyspark.__file__).parent),
            "SPARK_LOCAL_IP": "127.0.0.1",
            "SPARK_LOCAL_DIRS": str(scratch),
            "SPARK_LOG_DIR": str(self.root / name),
            "PYSPARK_PYTHON": sys.executable,
        }

    def start(self) -> None:
        master_log = self.root / "master.log"
        self.root.mkdir(parents=True, exist_ok=True)
        master = start(
            [
                str(self._spark_class()),
                "org.apache.spark.deploy.master.Master",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--webui-port",
                str(self.ui_port),
            ],
            self._env("master"),
            master_log,
        )
        self.processes.append(master)
        wait_for_port(self.port, master, master_log)
        for index in range(2):
            name = f"worker{index}"
            work = self.root / name / "work"
            work.mkdir(parents=True, exist_ok=True)
            self.processes.append(
                start(
                    [
                        str(self._spark_class()),
                        "org.apache.spark.deploy.worker.Worker",
                        self.master_url,
                        "--host",
                        "127.0.0.1",
                        "--cores",
                        "1",
                        "--memory",
                        "1g",
                        "--work-dir",
                        str(work),
                        "--webui-port",
                        str(free_port()),
                    ],
                    self._env(name),
                    self.root / f"{name}.log",
                )
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if len([w for w in self.state().get("workers", []) if w.get("state") == "ALIVE"]) == 2:
                return
            time.sleep(0.5)
        raise TimeoutError(f"Spark workers never registered: {self.state()}")

    def state(self) -> dict:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ui_port}/json/", timeout=5) as answer:
                return json.loads(answer.read())
        except OSError:
            return {}

    def applications(self) -> list[dict]:
        state = self.state()
        return state.get("activeapps", []) + state.get("completedapps", [])

    def stop(self) -> None:
        for process in reversed(self.processes):
            stop(process)


@dataclass
class DagsterDeployment:
    """A code server and the daemon over one PostgreSQL-backed instance."""

    home: Path
    env: dict[str, str]
    logs: Path
    grpc_port: int = field(default_factory=free_port)
    code_server: subprocess.Popen | None = None
    daemon: subprocess.Popen | None = None

    def write_instance(self, storage: dict) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        instance = {
            **storage,
            "run_coordinator": {"module": "dagster._core.run_coordinator", "class": "QueuedRunCoordinator"},
            "run_launcher": {"module": "dagster._core.launcher", "class": "DefaultRunLauncher"},
            # The dataset writers' pool: one run at a time writes the manifest, cache and versions.
            "concurrency": {"runs": {"max_concurrent_runs": 2}, "pools": {"default_limit": 1}},
            "sensors": {"use_threads": False},
            "telemetry": {"enabled": False},
        }
        (self.home / "dagster.yaml").write_text(yaml.safe_dump(instance))
        workspace = {
            "load_from": [
                {
                    "grpc_server": {
                        "host": "127.0.0.1",
                        "port": self.grpc_port,
                        "location_name": "fish_platform",
                    }
                }
            ]
        }
        (self.home / "workspace.yaml").write_text(yaml.safe_dump(workspace))

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        env = {**self.env, "DAGSTER_HOME": str(self.home)}
        self.code_server = start(
            [
                str(BIN / "dagster"),
                "api",
                "grpc",
                "-m",
                "fish_platform.definitions",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.grpc_port),
            ],
            env,
            self.logs / "code-server.log",
        )
        wait_for_port(self.grpc_port, self.code_server, self.logs / "code-server.log", seconds=180)
        self.daemon = start(
            [str(BIN / "dagster-daemon"), "run", "-w", str(self.home / "workspace.yaml")],
            env,
            self.logs / "daemon.log",
        )

    def instance(self):
        import dagster as dg

        return dg.DagsterInstance.from_config(str(self.home))

    def runs(self, job_name: str | None = None) -> list:
        import dagster as dg

        with self.instance() as instance:
            return list(instance.get_runs(dg.RunsFilter(job_name=job_name) if job_name else None))

    def wait_for_runs(self, count: int, job_name: str, seconds: float) -> list:
        """Wait until ``count`` runs of ``job_name`` exist and all have finished; oldest first."""

        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for process, name in ((self.code_server, "code server"), (self.daemon, "daemon")):
                if process is not None and process.poll() is not None:
                    raise RuntimeError(f"the {name} exited with {process.returncode}")
            runs = self.runs(job_name)
            if len(runs) >= count and all(r.is_finished for r in runs):
                return sorted(runs, key=lambda r: self.run_start(r.run_id))
            time.sleep(2)
        statuses = [(r.run_id, r.status) for r in self.runs(job_name)]
        raise TimeoutError(f"{count} finished {job_name} run(s) expected, have {statuses}")

    def failures(self, run_id: str) -> str:
        """The error messages of a run's failed steps (for assertion messages)."""
        lines = []
        with self.instance() as instance:
            for record in instance.all_logs(run_id):
                event = record.dagster_event
                if event is not None and event.event_type_value in ("STEP_FAILURE", "RUN_FAILURE"):
                    error = getattr(event.event_specific_data, "error", None)
                    lines.append(f"{event.step_key}: {event.message}\n{error.to_string() if error else ''}")
        return "\n".join(lines)[-6000:]

    def run_start(self, run_id: str) -> float:
        with self.instance() as instance:
            record = instance.get_run_record_by_id(run_id)
            return record.start_time or record.create_timestamp.timestamp()

    def stop(self) -> None:
        stop(self.daemon)
        stop(self.code_server)


def copy_logs(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for path in source.rglob("*.log"):
        shutil.copyfile(path, target / f"{path.parent.name}-{path.name}")
