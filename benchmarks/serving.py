"""Serving throughput and latency against a naive baseline and the in-process ceilings, in one run.

Scenarios (same model, same photos, same machine, one after the other):

* ``ceiling``: in this process, decode (``to_model_input``) and classify in batches of 32, no HTTP:
  the most this machine can classify, once per runtime (``--runtimes``, default TensorFlow through
  the model's compiled function and the version's OpenVINO bundle through the class the service
  uses). Measured first and last; the table shows the mean and both values (other load on a shared
  machine moves it).
* ``naive``: the same Keras model behind a minimal FastAPI app that calls ``model.predict`` once per
  request (no batching, no cache, TensorFlow): what a first attempt looks like.
* ``uncached``: ``bentoml serve serving.service:FishService`` on ``--service-runtime`` (default
  ``auto``: the version's OpenVINO bundle), every request a distinct image (a real photo with a
  unique PNG text chunk, so same pixels but a new sha256).
* ``cached``: the same service, a small set of images requested over and over (cache hits).
* ``uncached_nolog``: ``uncached`` again on a second start of the service with the prediction log off
  (``FISH_PREDICTION_LOG=off``): what the log costs. The log of the other scenarios goes to a
  temporary ``FISH_DATA_URI``. Two starts of one service differ by several percent on a small
  shared machine, more than the log costs, so the comparison runs in ABBA order (on, off, off, on:
  a drift in the machine's speed cancels) and compares the sums of the two runs of each.
* ``uncached_shadow``: ``uncached`` again on a third start with a challenger loaded (a second
  version of the same model under ``@challenger``), so every request is also answered in shadow and
  logged twice: what the shadow costs the champion's answers (latency with one client, throughput).

Each HTTP scenario runs with one client (latency) and with ``--concurrency`` clients (throughput).
The default of 64 clients keeps the service saturated with full batches of 32 (the ceiling's batch
size): two batches at the model, two being parsed, decoded and answered.

The load generator is a minimal asyncio HTTP/1.1 keep-alive client (cheap, so it steals little
CPU from the server on small machines) at a fixed concurrency for a fixed time, after a warm-up.
Photos: the Fish4Knowledge set (FISH_REAL_DATA_DIR, default ../shared/data/fish4knowledge), else
generated images. The model is an untrained EfficientNet of the chosen variant and size logged with
``log_classifier`` to a temporary MLflow registry, with an OpenVINO bundle logged beside it as the
``serving_model`` asset does (speed does not depend on the weights), or an existing registered
model with ``--tracking-uri`` and ``--model-name``.

    .venv/bin/python benchmarks/serving.py [--image-size 96] [--variant B0] [--concurrency 64]
        [--seconds 20] [--scenarios ceiling,naive,uncached,cached] [--runtimes tensorflow,openvino]
        [--service-runtime auto] [--no-redis]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from fastapi import UploadFile  # at module level: FastAPI resolves the naive app's annotations here

from fish_platform.contract import PRODUCTION_ALIAS, model_alias_uri, top_k

REPO = Path(__file__).resolve().parents[1]
BOUNDARY = "fishbenchboundary7d3c"
SCENARIOS = ("ceiling", "naive", "uncached", "cached", "uncached_nolog", "uncached_shadow")


# --- photos and request bodies -------------------------------------------------------------------


def load_photos(limit: int) -> tuple[list[bytes], str]:
    root = Path(os.environ.get("FISH_REAL_DATA_DIR") or REPO.parent / "shared" / "data" / "fish4knowledge")
    paths = sorted(root.glob("*/*.png"))[:limit] if root.is_dir() else []
    if paths:
        return [p.read_bytes() for p in paths], f"{len(paths)} real photos from {root}"
    from PIL import Image

    rng = np.random.default_rng(0)
    photos = []
    for _ in range(min(limit, 500)):
        buffer = io.BytesIO()
        size = (int(rng.integers(60, 400)), int(rng.integers(60, 300)))
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buffer, "PNG")
        photos.append(buffer.getvalue())
    return photos, f"{len(photos)} generated images (no real photos found at {root})"


def unique_png(data: bytes, n: int) -> bytes:
    """The same image with a ``tEXt`` chunk after IHDR: identical pixels, a different sha256."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return data + n.to_bytes(8, "big")  # not reached with PNG photos
    payload = b"bench\x00" + str(n).encode()
    chunk = struct.pack(">I", len(payload)) + b"tEXt" + payload
    chunk += struct.pack(">I", zlib.crc32(chunk[4:]) & 0xFFFFFFFF)
    ihdr_end = 8 + 8 + 13 + 4
    return data[:ihdr_end] + chunk + data[ihdr_end:]


def multipart(data: bytes, field_name: str = "file") -> bytes:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{field_name}"; filename="fish.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{BOUNDARY}--\r\n".encode()


# --- load generator --------------------------------------------------------------------------------


class Connection:
    """One keep-alive HTTP/1.1 connection; just enough protocol for these servers."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            await self._open()
        assert self.reader is not None and self.writer is not None
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        status = int((await self.reader.readline()).split()[1])
        length, chunked, close = 0, False, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                close = b"close" in value.lower()
        if chunked:
            parts = []
            while (size := int((await self.reader.readline()).strip() or b"0", 16)) > 0:
                parts.append(await self.reader.readexactly(size + 2))
            await self.reader.readline()
            payload = b"".join(p[:-2] for p in parts)
        else:
            payload = await self.reader.readexactly(length)
        if close:
            self.writer.close()
            self.writer = None
        return status, payload

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


@dataclass
class LoadResult:
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float] = field(repr=False)
    sample: dict | None = None

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")

    def summary(self) -> dict:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "req_per_s": round(self.rps, 1),
            "p50_ms": round(self.percentile(50), 2),
            "p95_ms": round(self.percentile(95), 2),
            "p99_ms": round(self.percentile(99), 2),
        }


def run_load(
    port: int, path: str, bodies: Callable[[], bytes], concurrency: int, seconds: float, warmup: float
) -> LoadResult:
    """``concurrency`` clients, back to back, for ``warmup + seconds``; answers in the last part count."""

    async def main() -> LoadResult:
        start = time.perf_counter()
        window = (start + warmup, start + warmup + seconds)
        latencies: list[float] = []
        errors = 0
        sample: dict | None = None

        async def client() -> None:
            nonlocal errors, sample
            conn = Connection("127.0.0.1", port)
            try:
                while (t0 := time.perf_counter()) < window[1]:
                    status, payload = await conn.post(path, bodies())
                    t1 = time.perf_counter()
                    # Every answer that arrives inside the window counts, whenever it was asked:
                    # counting only requests that also *started* inside it would drop about
                    # latency / window of the answers (20% with 6 s latencies in a 30 s window).
                    if window[0] <= t1 <= window[1]:
                        if status == 200:
                            latencies.append((t1 - t0) * 1000)
                        else:
                            errors += 1
                        if sample is None and status == 200:
                            sample = json.loads(payload)
            finally:
                conn.close()

        await asyncio.gather(*(client() for _ in range(concurrency)))
        return LoadResult(len(latencies), errors, seconds, latencies, sample)

    return asyncio.run(main())


# --- servers -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(
    cmd: list[str], env: dict[str, str], port: int, ready_path: str, log: Path
) -> subprocess.Popen:
    import httpx

    log_file = log.open("wb")
    process = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{cmd[0]} exited; see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}{ready_path}", timeout=5).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop_server(process)
    raise TimeoutError(f"{cmd} not ready after 300 s; see {log}")


def stop_server(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def naive_server(port: int, model_uri: str) -> None:
    """The baseline: FastAPI, one ``model.predict`` per request (run with ``--naive-server``)."""
    import uvicorn
    from fastapi import FastAPI

    from fish_platform.imaging import to_model_input
    from fish_platform.ml.packaging import load_classifier

    model = load_classifier(model_uri)
    keras_model = model.keras_model
    app = FastAPI()

    @app.get("/ready")
    def ready() -> dict:
        return {"ok": True}

    @app.post("/predict")
    def predict(file: UploadFile) -> dict:
        image = to_model_input(file.file.read(), model.image_size)[None].astype("float32")
        probs = keras_model.predict(image, verbose=0)[0]
        return {"top3": top_k(probs, model.labels)}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


# --- scenarios -------------------------------------------------------------------------------------


def register_model(
    root: Path, variant: str, image_size: int, bundles: list[str], n_labels: int = 9
) -> tuple[str, str]:
    """An untrained model logged like the real one, with ``bundles`` (e.g. ``["openvino"]``) logged
    as ``serving/<format>/`` in its run as the ``serving_model`` asset logs them; returns (tracking
    URI, model name)."""
    import mlflow
    from mlflow import MlflowClient

    from fish_platform.ml.export import export_model
    from fish_platform.ml.model import build_model
    from fish_platform.ml.packaging import log_classifier
    from fish_platform.ml.serving_bundles import SERVING_ARTIFACTS

    uri, name = f"sqlite:///{root / 'mlflow.db'}", "fish-bench"
    model, weights = build_model(n_labels, image_size, variant, "none")
    client = MlflowClient(uri, registry_uri=uri)
    experiment = client.create_experiment("fish-bench", artifact_location=(root / "artifacts").as_uri())
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    labels = [f"species_{i}" for i in range(n_labels)]
    with mlflow.start_run(experiment_id=experiment):
        info = log_classifier(
            model, labels, image_size, variant, weights.description, registered_model_name=name
        )
        for fmt in bundles:
            folder = export_model(model, labels, image_size, fmt, root / "bundles" / fmt)
            mlflow.log_artifacts(str(folder), f"{SERVING_ARTIFACTS}/{fmt}")
    client.set_registered_model_alias(name, PRODUCTION_ALIAS, str(info.registered_model_version))
    return uri, name


def set_challenger(tracking_uri: str, model_name: str) -> str:
    """A second version of the production version's model (same run, so the same bundles) under
    ``@challenger``: the service then answers every uncached request twice, once in shadow."""
    from mlflow import MlflowClient

    from fish_platform.contract import CHALLENGER_ALIAS

    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    champion = client.get_model_version_by_alias(model_name, PRODUCTION_ALIAS)
    second = client.create_model_version(model_name, champion.source, run_id=champion.run_id)
    client.set_registered_model_alias(model_name, CHALLENGER_ALIAS, str(second.version))
    return str(second.version)


def clear_challenger(tracking_uri: str, model_name: str) -> None:
    from mlflow import MlflowClient

    from fish_platform.contract import CHALLENGER_ALIAS

    MlflowClient(tracking_uri, registry_uri=tracking_uri).delete_registered_model_alias(
        model_name, CHALLENGER_ALIAS
    )


def runtime_model(tracking_uri: str, model_uri: str, runtime: str):
    """The registered version on ``runtime``: TensorFlow through the Keras model's compiled function,
    or the version's logged bundle (``serving/<runtime>/`` in its run) opened as the service opens
    it (``fish_platform.ml.export.load_exported``, threads from the CPU limit)."""
    from mlflow import MlflowClient

    from fish_platform.ml.export import load_exported, read_export
    from fish_platform.ml.packaging import load_classifier
    from fish_platform.ml.serving_bundles import download_bundle

    if runtime == "tensorflow":
        return load_classifier(model_uri)
    version_uri = model_uri_to_version(tracking_uri, model_uri)
    name, version = version_uri.removeprefix("models:/").rsplit("/", 1)
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    found = download_bundle(client, client.get_model_version(name, version).run_id, runtime, tracking_uri)
    if found is None:
        raise SystemExit(f"{version_uri} has no {runtime} bundle")
    folder = found[0]
    model = load_exported(folder)
    model.image_size = read_export(folder).image_size
    return model


def model_uri_to_version(tracking_uri: str, model_uri: str) -> str:
    from mlflow import MlflowClient

    name, alias = model_uri.removeprefix("models:/").split("@")
    version = MlflowClient(tracking_uri, registry_uri=tracking_uri).get_model_version_by_alias(name, alias)
    return f"models:/{name}/{version.version}"


def ceiling(model, photos: list[bytes], seconds: float, batch: int = 32) -> dict:
    from fish_platform.imaging import to_model_input

    size = model.image_size

    def one_batch(offset: int) -> None:
        arrays = [to_model_input(photos[(offset + k) % len(photos)], size) for k in range(batch)]
        model.predict_arrays(np.stack(arrays))

    one_batch(0)  # warm-up
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        one_batch(done)
        done += batch
    elapsed = time.perf_counter() - started
    return {"images_per_s": round(done / elapsed, 1), "batch": batch, "images": done}


def ceilings(
    tracking_uri: str, model_uri: str, runtimes: list[str], photos: list[bytes], seconds: float
) -> dict[str, dict]:
    """``ceiling_<runtime>`` for each runtime (models loaded once, measured one after the other)."""
    out = {}
    for runtime in runtimes:
        model = runtime_model(tracking_uri, model_uri, runtime)
        out[f"ceiling_{runtime}"] = {**ceiling(model, photos, seconds), "runtime": runtime}
        print(f"ceiling_{runtime}", out[f"ceiling_{runtime}"], flush=True)
        del model
    return out


def service_scenarios(
    service_env: dict[str, str],
    names: list[str],
    suffix: str,
    distinct: Callable[[], bytes],
    cached_body: Callable[[], bytes],
    args: argparse.Namespace,
    setup: dict,
    results: dict[str, dict],
    work: Path,
) -> None:
    """Start ``bentoml serve`` with ``service_env`` and run ``names`` (uncached, cached) against it."""
    import httpx

    port = free_port()
    cmd = [
        str(Path(sys.executable).with_name("bentoml")),
        "serve",
        "serving.service:FishService",
        "--port",
        str(port),
    ]
    server = start_server(cmd, service_env, port, "/readyz", work / f"service{suffix}.log")
    try:
        served = httpx.get(f"http://127.0.0.1:{port}/model", timeout=10).json()
        setup["service_runtime"] = served.get("runtime")
        print("service serves", {k: served.get(k) for k in ("version", "runtime")}, suffix, flush=True)
        for name in names:
            bodies = distinct if name == "uncached" else cached_body
            # One client first (latency without queueing), then the fixed concurrency (throughput):
            # BentoML's batching window learns from past waits, and after a saturated phase a lone
            # request waits for that learned window for a while.
            for key, clients, seconds in (
                (f"{name}{suffix}_1", 1, args.latency_seconds),
                (f"{name}{suffix}", args.concurrency, args.seconds),
            ):
                load = run_load(port, "/predict", bodies, clients, seconds, args.warmup)
                results[key] = {
                    **load.summary(),
                    "concurrency": clients,
                    "cached_sample": (load.sample or {}).get("cached"),
                }
                print(key, results[key], flush=True)
        if suffix == "_shadow":  # how much of the traffic the challenger kept up with
            results["shadow_counts"] = shadow_counts(
                httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            )
            print("shadow", results["shadow_counts"], flush=True)
    finally:
        stop_server(server)


def shadow_counts(metrics_text: str) -> dict[str, float]:
    """Images answered in shadow (agreeing or not) and dropped, from the service's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    counts = {"shadowed": 0.0, "dropped": 0.0, "answered": 0.0}
    names = {"fish_shadow_answers_total": "shadowed", "fish_shadow_dropped_total": "dropped",
             "fish_answers_total": "answered"}  # fmt: skip
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name in names:
                counts[names[sample.name]] += sample.value
    return counts


def fmt(value: float) -> str:
    return f"{value:.1f}" if value == value else "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variant", default="B0")
    parser.add_argument("--image-size", type=int, default=96, help="model input size (demo profile: 96)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=20.0, help="measured time per scenario")
    parser.add_argument("--warmup", type=float, default=5.0, help="unmeasured time before each scenario")
    parser.add_argument("--latency-seconds", type=float, default=10.0, help="measured time with 1 client")
    parser.add_argument("--photos", type=int, default=2000, help="at most this many distinct photos")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument(
        "--runtimes",
        default="tensorflow,openvino",
        help="in-process ceilings to measure (tensorflow, openvino, onnx)",
    )
    parser.add_argument(
        "--service-runtime", default="auto", help="FISH_RUNTIME of the service (auto: OpenVINO)"
    )
    parser.add_argument("--no-redis", action="store_true", help="use the in-process LRU, not redis-server")
    parser.add_argument("--tracking-uri", help="use this registry's production model instead of a new one")
    parser.add_argument("--model-name", default="fish-classifier")
    parser.add_argument(
        "--output", type=Path, help="JSON results (default benchmarks/results/serving-*.json)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary registry and server logs")
    parser.add_argument("--naive-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--model-uri", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.naive_server:
        naive_server(args.naive_server, args.model_uri)
        return

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    work = Path(tempfile.mkdtemp(prefix="fish-bench-"))
    photos, photo_source = load_photos(args.photos)
    runtimes = [r.strip() for r in args.runtimes.split(",") if r.strip()]
    if args.tracking_uri:
        tracking_uri, model_name = args.tracking_uri, args.model_name
    else:
        bundles = sorted(
            {r for r in [*runtimes, args.service_runtime] if r in ("openvino", "onnx")} | {"openvino"}
        )
        tracking_uri, model_name = register_model(work, args.variant, args.image_size, bundles)
    model_uri = model_alias_uri(model_name)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "FISH_MODEL_NAME": model_name,
        "BENTOML_HOME": str(work / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "True",
    }
    counter = iter(range(10**9))

    def distinct() -> bytes:
        n = next(counter)
        return multipart(unique_png(photos[n % len(photos)], n))

    repeated = [multipart(p) for p in photos[:16]]

    def cached_body() -> bytes:
        return repeated[next(counter) % len(repeated)]

    results: dict[str, dict] = {}
    setup = {
        "variant": args.variant,
        "image_size": args.image_size,
        "model": model_uri if args.tracking_uri else f"untrained {args.variant} at {args.image_size} px",
        "photos": photo_source,
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "cpus": os.cpu_count(),
        "load_before": os.getloadavg()[0],  # 1-minute load average: other tenants of the machine
    }
    print(json.dumps(setup), flush=True)

    if "ceiling" in scenarios:
        results.update(ceilings(tracking_uri, model_uri, runtimes, photos, args.seconds))

    if "naive" in scenarios:
        port = free_port()
        cmd = [sys.executable, __file__, "--naive-server", str(port), "--model-uri", model_uri]
        server = start_server(cmd, env, port, "/ready", work / "naive.log")
        try:
            for key, clients, seconds in (
                ("naive_1", 1, args.latency_seconds),
                ("naive", args.concurrency, args.seconds),
            ):
                load = run_load(port, "/predict", distinct, clients, seconds, args.warmup)
                results[key] = {**load.summary(), "concurrency": clients}
                print(key, results[key], flush=True)
        finally:
            stop_server(server)

    if {"uncached", "cached", "uncached_nolog", "uncached_shadow"} & set(scenarios):
        redis = None
        service_env = {
            **env,
            "FISH_MODEL_POLL_SECONDS": "30",
            "FISH_RUNTIME": args.service_runtime,
            # The prediction log (on by default) goes to the temporary folder.
            "FISH_DATA_URI": str(work / "data"),
            "FISH_DATA_DIR": str(work / "data"),
        }
        service_env.pop("REDIS_URL", None)
        if not args.no_redis and shutil.which("redis-server"):
            redis_port = free_port()
            redis = subprocess.Popen(
                ["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            service_env["REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
        setup["cache"] = "redis (loopback)" if redis else "in-process LRU"
        runs = [("", {}, [n for n in ("uncached", "cached") if n in scenarios])]
        runs = [run for run in runs if run[2]]
        if "uncached_nolog" in scenarios:  # the same service with the prediction log off, ABBA
            off = {"FISH_PREDICTION_LOG": "off"}
            runs += [("_nolog", off, ["uncached"]), ("_nolog_b", off, ["uncached"]), ("_b", {}, ["uncached"])]
        if "uncached_shadow" in scenarios:  # the same service with a challenger in shadow
            runs.append(("_shadow", {}, ["uncached"]))
        try:
            for suffix, extra, names in runs:
                challenger = set_challenger(tracking_uri, model_name) if suffix == "_shadow" else None
                try:
                    service_scenarios(
                        {**service_env, **extra},
                        names,
                        suffix,
                        distinct,
                        cached_body,
                        args,
                        setup,
                        results,
                        work,
                    )
                finally:
                    if challenger is not None:
                        clear_challenger(tracking_uri, model_name)
        finally:
            if redis is not None:
                redis.terminate()
                redis.wait()

    if "ceiling" in scenarios:  # again: other load on a shared machine moves every figure
        for key, after in ceilings(tracking_uri, model_uri, runtimes, photos, args.seconds).items():
            before = results[key]["images_per_s"]
            results[key].update(
                images_per_s=round((before + after["images_per_s"]) / 2, 1),
                before=before,
                after=after["images_per_s"],
            )
    setup["load_after"] = os.getloadavg()[0]
    report(setup, results, args, work)


def goals(results: dict[str, dict]) -> Iterator[str]:
    """The goals of docs/benchmarks.md, each marked met or not."""
    uncached = results.get("uncached", {}).get("req_per_s")
    ceilings_ = {
        k.removeprefix("ceiling_"): v["images_per_s"] for k, v in results.items() if k.startswith("ceiling_")
    }
    if uncached and results.get("naive", {}).get("req_per_s"):
        ratio = uncached / results["naive"]["req_per_s"]
        yield f"uncached vs naive: {ratio:.2f}x (goal >= 2x): {'met' if ratio >= 2 else 'NOT met'}"
    if uncached and "tensorflow" in ceilings_:
        ratio = uncached / ceilings_["tensorflow"]
        yield (
            f"uncached vs TensorFlow in-process ceiling: {ratio:.2f}x (goal >= 2x for B0 at 224 px): "
            f"{'met' if ratio >= 2 else 'NOT met'}"
        )
    if uncached and ceilings_:
        fastest = max(ceilings_, key=ceilings_.get)
        share = uncached / ceilings_[fastest]
        yield (
            f"uncached vs the fastest in-process ceiling ({fastest}): {share:.0%} (goal >= 80%): "
            f"{'met' if share >= 0.8 else 'NOT met'}"
        )
    if uncached and results.get("uncached_nolog", {}).get("req_per_s"):
        on = [results[k]["req_per_s"] for k in ("uncached", "uncached_b") if k in results]
        off = [results[k]["req_per_s"] for k in ("uncached_nolog", "uncached_nolog_b") if k in results]
        share = sum(on) / len(on) / (sum(off) / len(off))
        runs = f"on {', '.join(f'{v:.1f}' for v in on)}; off {', '.join(f'{v:.1f}' for v in off)} req/s"
        yield (
            f"uncached with the prediction log vs without: {share:.0%} ({runs}; goal >= 95%): "
            f"{'met' if share >= 0.95 else 'NOT met'}"
        )
    if results.get("uncached_shadow", {}).get("req_per_s") and uncached:
        on = [results[k]["req_per_s"] for k in ("uncached", "uncached_b") if k in results]
        share = results["uncached_shadow"]["req_per_s"] / (sum(on) / len(on))
        yield f"uncached with a challenger in shadow vs without: {share:.0%} of the throughput (information)"
    if "shadow_counts" in results:
        c = results["shadow_counts"]
        yield (
            f"shadow coverage over both phases: {c['shadowed']:.0f} of {c['answered']:.0f} answers also "
            f"answered by the other model, {c['dropped']:.0f} dropped (backlog or failure; information)"
        )
    if "uncached_shadow_1" in results and "uncached_1" in results:
        with_shadow, without = results["uncached_shadow_1"]["p50_ms"], results["uncached_1"]["p50_ms"]
        yield (
            f"one client, p50 with a challenger in shadow: {with_shadow:.2f} ms vs {without:.2f} ms without "
            f"({with_shadow - without:+.2f} ms; the shadow runs after the answer, the cost is CPU shared)"
        )
    if "cached_1" in results:
        p50 = results["cached_1"]["p50_ms"]
        yield f"cached p50, one client: {p50:.2f} ms (goal <= 2 ms): {'met' if p50 <= 2 else 'NOT met'}"
    if "cached" in results:  # saturated: the p50 is queueing (clients / throughput), not cache cost
        r = results["cached"]
        yield (
            f"cached p50 at {r['concurrency']} clients: {r['p50_ms']:.2f} ms "
            f"(saturated, {r['req_per_s']:.0f} req/s; for information)"
        )


def report(setup: dict, results: dict[str, dict], args: argparse.Namespace, work: Path) -> None:
    label = f"{setup['variant']} @ {setup['image_size']} px"
    print(
        f"\n{setup['model']}; {setup['photos']}; concurrency {setup['concurrency']}, "
        f"{setup['seconds']:.0f} s per scenario; {setup['cpus']} CPUs; cache {setup.get('cache', '-')}; "
        f"service runtime {setup.get('service_runtime', '-')}\n"
    )
    print("| scenario | model | req/s (images/s) | p50 ms | p95 ms | p99 ms | errors |")
    print("|---|---|---:|---:|---:|---:|---:|")
    names = [k for k in results if k.startswith("ceiling_")]
    names += [
        "naive",
        "uncached",
        "uncached_nolog",
        "uncached_nolog_b",
        "uncached_b",
        "uncached_shadow",
        "cached",
        "naive_1",
        "uncached_1",
        "uncached_nolog_1",
        "uncached_shadow_1",
        "cached_1",
    ]
    for name in names:
        if name not in results:
            continue
        r = results[name]
        if name.startswith("ceiling_"):
            spread = f" ({fmt(r['before'])} before, {fmt(r['after'])} after)" if "after" in r else ""
            name = f"ceiling, {r['runtime']} (in-process, batch {r['batch']})"
            print(f"| {name} | {label} | {fmt(r['images_per_s'])}{spread} | | | | |")
        else:
            clients = f"{r['concurrency']} client" + ("s" if r["concurrency"] > 1 else "")
            print(
                f"| {name.removesuffix('_1')} ({clients}) | {label} | {fmt(r['req_per_s'])} "
                f"| {fmt(r['p50_ms'])} | {fmt(r['p95_ms'])} | {fmt(r['p99_ms'])} | {r['errors']} |"
            )
    print()
    for line in goals(results):
        print("-", line)
    output = args.output or REPO / "benchmarks" / "results" / f"serving-{time.strftime('%Y%m%d-%H%M%S')}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(
        json.dumps({"setup": setup, "results": results, "goals": list(goals(results))}, indent=2)
    )
    if args.keep:
        print(f"\nresults: {output}; registry and server logs: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
        print(f"\nresults: {output}")


if __name__ == "__main__":
    main()
