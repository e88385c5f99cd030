"""Training throughput: the platform's training against a plain Keras loop over in-memory arrays.

    .venv/bin/python benchmarks/training.py                        # 96 and 224 px, real photos if present
    .venv/bin/python benchmarks/training.py --sizes 96 --images 320 --epochs 4
    .venv/bin/python benchmarks/training.py --source synthetic      # generated fish instead of photos

Per image size, both arms train EfficientNet (the demo profile's variant and weights, so B0 from
scratch) at the demo profile's batch size with its augmentation, in one process:

* **platform**: ``fish_platform.ml.train.train_classifier`` with the demo profile (epochs set by
  ``--epochs``, no early stopping, no minimum steps) on a dataset version written in the dataset
  job's layout (Parquet shards of PNG bytes, the platform's 80/10/10 split): its input pipeline, class
  weights, validation every epoch and callbacks, exactly as the ``fish_classifier`` asset runs it;
* **plain Keras**: the same model (same builder, same seed) behind the same augmentation layers,
  ``model.fit(x, y)`` on the train split decoded beforehand into a float32 array, no validation.

Epochs alternate: each platform epoch's report runs one plain epoch before the platform continues, so
a neighbour's load on a shared machine hits both arms alike. The first epoch of each arm (tracing,
and the platform's cache filling) is not timed. A platform epoch is timed from the end of the
previous plain epoch to its report (training, validation and the previous epoch's callbacks); the
ratio is of median images/s of the train split. Goal: the platform at least 90% of plain Keras.
JSON goes to ``benchmarks/results/`` (git-ignored) unless ``--output`` says otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

RESULTS = Path(__file__).resolve().parent / "results"


def _photo_sources(count: int, species: int) -> dict[str, list[bytes]]:
    """``count`` real photos spread evenly over the ``species`` species with the most photos."""
    from fish_platform_tests.helpers import real_data_path

    root = real_data_path()
    folders = sorted(
        (d for d in root.iterdir() if d.is_dir()), key=lambda d: (-len(list(d.iterdir())), d.name)
    )
    folders = folders[:species]
    per_species = -(-count // len(folders))
    return {d.name: [p.read_bytes() for p in sorted(d.iterdir())[:per_species]] for d in folders}


def _generated_sources(count: int, species: int, out_dir: Path) -> dict[str, list[bytes]]:
    from fish_platform.data.synthetic import generate_dataset

    summary = generate_dataset(out_dir, species=species, per_species=-(-count // species), seed=0)
    return {name: [p.read_bytes() for p in sorted((out_dir / name).iterdir())] for name in summary.species}


def write_dataset(out_dir: Path, sources: dict[str, list[bytes]], image_size: int):
    """Encoded images per species -> a dataset version, split as the dataset job splits (80/10/10)."""
    import pandas as pd

    from fish_platform.data.layout import DatasetVersion
    from fish_platform.data.splits import assign_splits
    from fish_platform.imaging import decode_image, encode_png, resize_square, sha256_hex

    labels = sorted(sources)
    rows, seen = [], set()
    for label, species in enumerate(labels):
        for index, data in enumerate(sources[species]):
            sha = sha256_hex(data)
            if sha in seen:  # the photos hold a few exact duplicates; the dataset job drops them
                continue
            seen.add(sha)
            image = decode_image(data)
            rows.append(
                {
                    "sha256": sha,
                    "species": species,
                    "label": label,
                    "image": encode_png(resize_square(image, image_size)),
                    "uri": f"mem://{species}/{index}",
                    "orig_width": image.width,
                    "orig_height": image.height,
                }
            )
    frame = pd.DataFrame(rows)
    frame["split"] = frame["sha256"].map(assign_splits(zip(frame["sha256"], frame["species"], strict=True)))
    version = DatasetVersion(str(out_dir))
    for split in ("train", "val", "test"):
        version.write_shard(split, "00000", frame[frame["split"] == split])
    version.write_ledger(frame)
    counts = {
        s: frame[frame["split"] == s].groupby("species").size().to_dict() for s in ("train", "val", "test")
    }
    version.write_labels({"labels": labels, "image_size": image_size, "split_counts": counts})
    version.write_reports([], [])
    version.write_marker({"version": version.version_id, "rows": len(frame)})
    return version


def _in_memory(version, image_size: int):
    """The train split decoded into one float32 array, as a plain Keras script would hold it."""
    import numpy as np

    from fish_platform.imaging import to_model_input
    from fish_platform.ml.input import iter_rows

    rows = list(iter_rows(version, "train", ["image", "label"]))
    x = np.stack([to_model_input(r["image"], image_size) for r in rows]).astype("float32")
    return x, np.array([r["label"] for r in rows], dtype="int32")


def _demo_config(image_size: int, epochs: int, batch_size: int | None):
    """The demo profile at ``image_size`` for ``epochs`` epochs, never stopping early."""
    from fish_platform.ml.config import TrainConfig

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    overrides = {
        "image_size": image_size,
        "epochs_head": epochs,
        "epochs_finetune": 0,
        "patience": epochs,
        "batch_size": batch_size,
    }
    if "min_steps" in names:  # absent before minimum steps existed (benchmarking older code)
        overrides["min_steps"] = 0
    return TrainConfig.from_profile("demo", **overrides)


def measure(version, image_size: int, epochs: int, batch_size: int | None) -> dict:
    """Both arms at one size, alternating epochs; returns the figures."""
    import keras
    import numpy as np

    from fish_platform.ml.input import augmentation, read_dataset_info
    from fish_platform.ml.model import build_model
    from fish_platform.ml.train import train_classifier

    config = _demo_config(image_size, epochs, batch_size)
    info = read_dataset_info(version)
    x, y = _in_memory(version, image_size)
    keras.utils.set_random_seed(config.seed)
    model, _ = build_model(
        info.n_classes,
        image_size,
        config.variant,
        config.weights,
        dropout=config.dropout,
        bn_momentum=config.bn_momentum,
    )
    plain = keras.Sequential([keras.Input((image_size, image_size, 3)), augmentation(config.seed), model])
    plain.compile(
        optimizer=keras.optimizers.Adam(config.lr_head),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )

    wall: dict[str, list[float]] = {"platform": [], "plain": []}
    cpu: dict[str, list[float]] = {"platform": [], "plain": []}
    clock = {"wall": time.perf_counter(), "cpu": time.process_time()}

    def plain_epoch(record) -> None:
        wall["platform"].append(time.perf_counter() - clock["wall"])
        cpu["platform"].append(time.process_time() - clock["cpu"])
        started, cpu_started = time.perf_counter(), time.process_time()
        plain.fit(x, y, batch_size=config.batch_size, epochs=1, shuffle=True, verbose=0)
        wall["plain"].append(time.perf_counter() - started)
        cpu["plain"].append(time.process_time() - cpu_started)
        print(
            f"  {image_size} px epoch {record.epoch}: platform {wall['platform'][-1]:.1f}s "
            f"(val_accuracy {record.metrics.get('val_accuracy', float('nan')):.3f}), "
            f"plain {wall['plain'][-1]:.1f}s",
            flush=True,
        )
        clock["wall"], clock["cpu"] = time.perf_counter(), time.process_time()

    result = train_classifier(config, version, on_epoch=plain_epoch)
    n = result.train_images
    assert n == len(x)
    steady = {arm: seconds[1:] for arm, seconds in wall.items()}
    rates = {arm: n / statistics.median(seconds) for arm, seconds in steady.items()}
    cpu_rates = {arm: n / statistics.median(seconds[1:]) for arm, seconds in cpu.items()}
    paired = [p / q for p, q in zip(steady["plain"], steady["platform"], strict=True)]
    return {
        "image_size": image_size,
        "variant": config.variant,
        "weights": config.weights,
        "batch_size": config.batch_size,
        "augment": config.augment,
        "train_images": n,
        "val_images": result.val_images,
        "epochs": len(result.history),
        "timed_epochs": len(paired),
        "first_epoch_s": {arm: round(seconds[0], 1) for arm, seconds in wall.items()},
        "epoch_s": {arm: [round(s, 2) for s in seconds] for arm, seconds in steady.items()},
        "images_per_s": {arm: round(rate, 1) for arm, rate in rates.items()},
        "platform_vs_plain": round(rates["platform"] / rates["plain"], 3),
        "paired_ratios": [round(r, 3) for r in paired],
        "median_paired_ratio": round(float(np.median(paired)), 3),
        "images_per_cpu_s": {arm: round(rate, 1) for arm, rate in cpu_rates.items()},
        "platform_vs_plain_cpu": round(cpu_rates["platform"] / cpu_rates["plain"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="96,224", help="image sizes, comma-separated")
    parser.add_argument("--images", type=int, default=400, help="images at the first size (80%% train)")
    parser.add_argument("--images-large", type=int, default=150, help="images per dataset at the other sizes")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per arm; the first is not timed")
    parser.add_argument("--species", type=int, default=10)
    parser.add_argument(
        "--source",
        choices=["auto", "real", "synthetic"],
        default="auto",
        help="auto: real photos (FISH_REAL_DATA_DIR) when present",
    )
    parser.add_argument("--batch-size", type=int, help="default: the demo profile's")
    parser.add_argument("--output", type=Path, help="JSON file (default: benchmarks/results/)")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first is not timed)")

    from fish_platform_tests.helpers import real_data_path

    source = args.source
    if source == "auto":
        source = "real" if real_data_path().is_dir() else "synthetic"
    sizes = [int(s) for s in args.sizes.split(",")]
    runs = []
    with tempfile.TemporaryDirectory(prefix="fish-bench-train-") as tmp:
        for index, size in enumerate(sizes):
            count = args.images if index == 0 else args.images_large
            if source == "real":
                sources = _photo_sources(count, args.species)
            else:
                sources = _generated_sources(count, min(args.species, 8), Path(tmp) / f"raw-{size}")
            version = write_dataset(Path(tmp) / f"dataset-{size}", sources, size)
            print(f"{size} px: {source} images, training {args.epochs} epochs per arm", flush=True)
            run = measure(version, size, args.epochs, args.batch_size)
            runs.append(run)
            print(
                f"{size} px: platform {run['images_per_s']['platform']:.1f} images/s, plain Keras "
                f"{run['images_per_s']['plain']:.1f} images/s: ratio {run['platform_vs_plain']:.3f} "
                f"(paired median {run['median_paired_ratio']:.3f}, "
                f"CPU time {run['platform_vs_plain_cpu']:.3f}; "
                "goal >= 0.9)",
                flush=True,
            )

    result = {
        "benchmark": "training",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": source,
        "runs": runs,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }
    print(json.dumps(result, indent=2))
    output = args.output or RESULTS / f"training-{datetime.now():%Y%m%d-%H%M%S}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2))
    print(f"written to {output}")


if __name__ == "__main__":
    main()
