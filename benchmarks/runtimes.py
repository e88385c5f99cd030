"""CPU inference runtimes side by side: TensorFlow, OpenVINO, LiteRT and ONNX Runtime, in one process.

For each EfficientNet variant and input size (default B0 at 224 px and B4 at 380 px) an untrained
model (``weights=None``: speed does not depend on the weights) is built with ``build_model``,
exported once as a SavedModel and converted with :mod:`fish_platform.ml.optimize`; every runtime
then classifies the same random batch for ``--seconds`` per batch size:

* ``tensorflow``: the Keras model through one compiled ``tf.function`` (how the MLflow wrapper
  serves it), the baseline of the ``vs TF`` column;
* ``openvino``: FP32 IR with the runtime class's default THROUGHPUT hint (a batch dealt out to
  the streams' infer requests in pieces of ``DEFAULT_REQUEST_BATCH`` images); ``openvino-latency``:
  the same IR with the LATENCY hint (one stream, every thread); ``openvino-split`` (only with
  ``--runtimes``): THROUGHPUT with the batch split evenly, one part per infer request;
* ``litert``: float32 ``.tflite`` on the LiteRT interpreter (XNNPACK);
* ``onnx``: ONNX Runtime, CPU provider (when onnxruntime and tf2onnx are installed);
* ``openvino-int8`` (only with ``--runtimes``): the IR quantized by NNCF with random calibration
  images: its speed is real, its accuracy meaningless (that is the INT8 gate's business).

Every runtime gets the same thread count (``--threads``, default: the container's CPU limit via
``cpu_threads_from_limit``). The timed seconds are split into ``--rounds`` rounds, and each round
runs the runtimes in a rotated order, so a neighbour's load on a shared machine is spread over
all of them; the spread column shows the slowest and fastest round, and "vs TF, best rounds"
compares the fastest rounds (the least disturbed by other load, like timeit's minimum). The
parity column compares each runtime's probabilities with TensorFlow's on the benchmark batch;
random weights give nearly uniform probabilities, so it shows numerical agreement only (the tests
check parity, and the INT8 gate, on models whose outputs vary).

    .venv/bin/python benchmarks/runtimes.py                                # B0@224 and B4@380, batch 1 and 32
    .venv/bin/python benchmarks/runtimes.py --variants B0 --sizes 224 --seconds 5
    .venv/bin/python benchmarks/runtimes.py --runtimes tensorflow,openvino --batches 1,8,32

JSON results go to ``benchmarks/results/runtimes-*.json`` (git-ignored) or ``--output``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from importlib import metadata as importlib_metadata
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RUNTIMES = ("tensorflow", "openvino", "openvino-latency", "litert", "onnx")
OPTIONAL_RUNTIMES = ("openvino-int8", "openvino-split")  # only when asked for with --runtimes
N_CLASSES = 9  # the Kaggle fish set's species


def parse_list(text: str, kind=str) -> list:
    return [kind(part.strip()) for part in text.split(",") if part.strip()]


def pairs(variants: list[str], sizes: list[int] | None) -> list[tuple[str, int]]:
    """Variants with their sizes: zipped, one size for all, or each variant's native size."""
    from fish_platform.ml.model import NATIVE_SIZES, normalize_variant

    variants = [normalize_variant(v) for v in variants]
    if not sizes:
        return [(v, NATIVE_SIZES[v]) for v in variants]
    if len(sizes) == 1:
        return [(v, sizes[0]) for v in variants]
    if len(sizes) != len(variants):
        raise SystemExit("--sizes needs one size, or one per variant")
    return list(zip(variants, sizes, strict=True))


def version(package: str) -> str | None:
    try:
        return importlib_metadata.version(package)
    except importlib_metadata.PackageNotFoundError:
        return None


def convert(model, folder: Path, wanted: list[str]) -> tuple[dict[str, Path], dict[str, float]]:
    """SavedModel once, then each format from it; returns model files and conversion seconds."""
    from fish_platform.ml import optimize

    seconds: dict[str, float] = {}
    saved = folder / "saved_model"
    targets = {
        "openvino": folder / "openvino" / optimize.OPENVINO_XML,
        "litert": folder / optimize.LITERT_FILE,
        "onnx": folder / optimize.ONNX_FILE,
    }
    files: dict[str, Path] = {}
    for name, target in targets.items():
        if target.is_file():  # a --keep folder from an earlier run (same seed, same weights)
            files[name] = target
            print(f"  reusing {target}", flush=True)
    if not optimize.is_saved_model(saved):
        started = time.perf_counter()
        optimize.export_saved_model(model, saved)
        seconds["saved_model"] = time.perf_counter() - started
    steps = {
        "openvino": lambda: optimize.convert_to_openvino(saved, targets["openvino"].parent),
        "litert": lambda: optimize.convert_to_litert(saved, targets["litert"]),
        "onnx": lambda: optimize.convert_to_onnx(saved, targets["onnx"]),
    }
    if "openvino-int8" in wanted:
        int8_xml = folder / "openvino-int8" / optimize.OPENVINO_XML
        steps["openvino-int8"] = lambda: optimize.quantize_int8(
            files["openvino"] if "openvino" in files else targets["openvino"],
            np.random.default_rng(1).uniform(0, 255, (32, *model.input_shape[1:])).astype(np.float32),
            int8_xml.parent,
        )
        if int8_xml.is_file():
            files["openvino-int8"] = int8_xml
    for name, step in steps.items():
        if name in files or not any(w == name or w.startswith(name + "-") for w in wanted):
            continue
        started = time.perf_counter()
        try:
            files[name] = step()
        except Exception as exc:  # report and go on with the other runtimes
            print(f"  {name}: conversion failed: {type(exc).__name__}: {exc}", flush=True)
            continue
        seconds[name] = time.perf_counter() - started
        print(f"  converted to {name} in {seconds[name]:.1f} s", flush=True)
    return files, seconds


def make_runtimes(model, files: dict[str, Path], wanted: list[str], threads: int) -> dict:
    from fish_platform.ml import runtimes as rt

    made = {}
    for name in wanted:
        if name == "tensorflow":
            made[name] = rt.TensorFlowClassifier(model, threads)
        elif name == "openvino" and "openvino" in files:
            made[name] = rt.OpenVINOClassifier(files["openvino"], threads, hint="throughput")
        elif name == "openvino-split" and "openvino" in files:
            made[name] = rt.OpenVINOClassifier(
                files["openvino"], threads, hint="throughput", request_batch=None
            )
        elif name == "openvino-latency" and "openvino" in files:
            made[name] = rt.OpenVINOClassifier(files["openvino"], threads, hint="latency")
        elif name == "openvino-int8" and "openvino-int8" in files:
            made[name] = rt.OpenVINOClassifier(files["openvino-int8"], threads, hint="throughput")
        elif name == "litert" and "litert" in files:
            made[name] = rt.LiteRTClassifier(files["litert"], threads)
        elif name == "onnx" and "onnx" in files:
            made[name] = rt.OnnxClassifier(files["onnx"], threads)
    return made


def time_calls(runtime, batch: np.ndarray, seconds: float) -> tuple[int, float, list[float]]:
    """Call ``predict_arrays`` for ``seconds`` (at least twice); images done, elapsed, call latencies."""
    latencies = []
    started = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        runtime.predict_arrays(batch)
        latencies.append(time.perf_counter() - t0)
        if time.perf_counter() - started >= seconds and len(latencies) >= 2:
            break
    return len(latencies) * len(batch), time.perf_counter() - started, latencies


def bench(made: dict, batch: np.ndarray, seconds: float, rounds: int) -> dict[str, dict]:
    names = list(made)
    for name in names:  # warm-up: first-call allocations, shape-specific plans
        made[name].predict_arrays(batch)
    images = dict.fromkeys(names, 0)
    elapsed = dict.fromkeys(names, 0.0)
    latencies: dict[str, list[float]] = {name: [] for name in names}
    per_round: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            n, t, lat = time_calls(made[name], batch, seconds / rounds)
            images[name] += n
            elapsed[name] += t
            latencies[name] += lat
            per_round[name].append(n / t)
    return {
        name: {
            "images_per_s": images[name] / elapsed[name],
            "best_round_images_per_s": max(per_round[name]),
            "round_images_per_s": per_round[name],
            "p50_ms": 1000 * statistics.median(latencies[name]),
            "calls": len(latencies[name]),
        }
        for name in names
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variants", default="B0,B4", help="EfficientNet variants (default B0,B4)")
    parser.add_argument("--sizes", default="224,380", help="input sizes, one per variant or one for all")
    parser.add_argument("--batches", default="1,32", help="batch sizes (default 1,32)")
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="timed seconds per runtime and batch size"
    )
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds the seconds are split into")
    choices = ",".join(RUNTIMES + OPTIONAL_RUNTIMES)
    parser.add_argument("--runtimes", default=",".join(RUNTIMES), help=f"subset of {choices}")
    parser.add_argument("--threads", type=int, help="compute threads per runtime (default: the CPU limit)")
    parser.add_argument(
        "--output", type=Path, help="JSON results (default benchmarks/results/runtimes-*.json)"
    )
    parser.add_argument(
        "--keep", type=Path, help="keep the converted models in this folder (and reuse those found there)"
    )
    args = parser.parse_args()

    from fish_platform.ml.runtimes import available_runtimes, cpu_threads_from_limit

    threads = args.threads or cpu_threads_from_limit()
    import tensorflow as tf  # configure TensorFlow's pool before it runs anything

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    import keras

    from fish_platform.ml.model import build_model
    from fish_platform.ml.optimize import check_parity

    installed = set(available_runtimes())
    wanted = [r for r in parse_list(args.runtimes) if r.split("-")[0] in installed]
    if "tensorflow" not in wanted:
        wanted.insert(0, "tensorflow")  # the baseline
    configs = pairs(parse_list(args.variants), parse_list(args.sizes, int))
    batches = parse_list(args.batches, int)
    setup = {
        "configs": [f"{v}@{s}" for v, s in configs],
        "batches": batches,
        "runtimes": wanted,
        "threads": threads,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "cpu": platform.processor() or platform.machine(),
        "allowed_cpus": len(os.sched_getaffinity(0)),
        "load_before": os.getloadavg()[0],  # other tenants of the machine
        "versions": {
            p: version(p)
            for p in (
                "tensorflow-cpu",
                "keras",
                "openvino",
                "ai-edge-litert",
                "onnxruntime",
                "tf2onnx",
                "nncf",
            )
        },
    }
    print(json.dumps(setup), flush=True)
    work = args.keep or Path(tempfile.mkdtemp(prefix="fish-runtimes-"))
    results, conversions = [], {}
    try:
        for variant, size in configs:
            label = f"{variant}@{size}"
            print(f"{label}: building and converting", flush=True)
            keras.utils.set_random_seed(0)
            model, _ = build_model(N_CLASSES, size, variant, "none")
            files, seconds = convert(model, work / label, wanted)
            conversions[label] = seconds
            made = make_runtimes(model, files, wanted, threads)
            inputs = (
                np.random.default_rng(0).uniform(0, 255, (max(batches), size, size, 3)).astype(np.float32)
            )
            reference = made["tensorflow"].predict_arrays(inputs)
            parity = {name: check_parity(reference, r.predict_arrays(inputs)) for name, r in made.items()}
            for batch_size in batches:
                timed = bench(made, inputs[:batch_size], args.seconds, args.rounds)
                base = timed["tensorflow"]["images_per_s"]
                best_base = timed["tensorflow"]["best_round_images_per_s"]
                for name, figures in timed.items():
                    row = {
                        "config": label,
                        "variant": variant,
                        "image_size": size,
                        "batch": batch_size,
                        "runtime": name,
                        **figures,
                        "vs_tensorflow": figures["images_per_s"] / base,
                        "vs_tensorflow_best_round": figures["best_round_images_per_s"] / best_base,
                        "parity_max_abs_diff": parity[name].max_abs_diff,
                        "parity_top1_agreement": parity[name].top1_agreement,
                        "parity_passed": parity[name].passed,
                    }
                    results.append(row)
                    print(
                        f"  batch {batch_size:>3} {name:<14} {figures['images_per_s']:8.1f} img/s "
                        f"p50 {figures['p50_ms']:8.1f} ms  x{row['vs_tensorflow']:.2f}",
                        flush=True,
                    )
            del made
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    setup["load_after"] = os.getloadavg()[0]
    report(setup, results, conversions, args)


def report(setup: dict, results: list[dict], conversions: dict, args: argparse.Namespace) -> None:
    print(
        f"\n{setup['threads']} threads per runtime; {setup['seconds']:g} s per runtime and batch in "
        f"{setup['rounds']} rounds; load average {setup['load_before']:.1f} before, "
        f"{setup['load_after']:.1f} after\n"
    )
    print(
        "| model | batch | runtime | images/s | rounds (min-max) | p50 ms/batch | vs TF "
        "| vs TF, best rounds | parity max diff |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        spread = f"{min(r['round_images_per_s']):.1f}-{max(r['round_images_per_s']):.1f}"
        print(
            f"| {r['config']} | {r['batch']} | {r['runtime']} | {r['images_per_s']:.1f} | {spread} "
            f"| {r['p50_ms']:.1f} | {r['vs_tensorflow']:.2f} | {r['vs_tensorflow_best_round']:.2f} "
            f"| {r['parity_max_abs_diff']:.1e} |"
        )
    print(
        "\nconversion seconds:",
        json.dumps({k: {n: round(s, 1) for n, s in v.items()} for k, v in conversions.items()}),
    )
    output = (
        args.output or REPO / "benchmarks" / "results" / f"runtimes-{time.strftime('%Y%m%d-%H%M%S')}.json"
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"setup": setup, "results": results, "conversion_s": conversions}, indent=2))
    print(f"\nresults: {output}")


if __name__ == "__main__":
    main()
