"""Spark preprocessing throughput against a single-process Pillow loop, in the same run.

Both do the same work per image: read the bytes, sha256, decode and validate, convert to RGB,
resize, encode PNG. Spark session start-up is reported separately. Datasets: the real
Fish4Knowledge photos (FISH_REAL_DATA_DIR, default ../shared/data/fish4knowledge; skipped if
absent) and generated images (--generated N, default 5000).

    .venv/bin/python benchmarks/preprocess.py [--generated 5000] [--size 224] [--master local[*]]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from fish_platform.data.dataset import DatasetConfig, build_dataset, process_partition
from fish_platform.data.manifest import build_manifest, read_manifest
from fish_platform.data.spark import build_spark_session
from fish_platform.data.store import LocalImageStore
from fish_platform.data.synthetic import generate_dataset
from fish_platform.imaging import InvalidImage, decode_image, encode_png, resize_square, sha256_hex

REPO = Path(__file__).resolve().parents[1]


def pillow_loop(uris: list[str], size: int) -> float:
    """Images per second of the plain loop."""
    started = time.perf_counter()
    for uri in uris:
        data = Path(uri).read_bytes()
        sha256_hex(data)
        try:
            encode_png(resize_square(decode_image(data), size))
        except InvalidImage:
            pass
    return len(uris) / (time.perf_counter() - started)


def spark_stage(spark, frame, root: str, size: int) -> float:
    """Images per second of the Spark decode/resize stage (the same work as the loop)."""
    partitions = spark.sparkContext.defaultParallelism * 4
    started = time.perf_counter()
    (
        spark.createDataFrame(frame[["uri", "species"]])
        .repartition(partitions)
        .mapInPandas(
            process_partition(root, None, size, 50_000_000),
            "uri string, species string, "
            "sha256 string, status string, reason string, detail string, image binary, "
            "orig_width int, orig_height int",
        )
        .write.format("noop")
        .mode("overwrite")
        .save()
    )
    return len(frame) / (time.perf_counter() - started)


def run(name: str, root: Path, size: int, spark, work: Path, repeats: int) -> None:
    manifest_path = work / f"{name}-manifest.parquet"
    build_manifest(LocalImageStore(root), manifest_path)
    frame = read_manifest(manifest_path)
    uris = list(frame["uri"])
    first = spark_stage(spark, frame, str(root), size)
    # Alternate the two so that load from other processes hits both alike; keep each one's best.
    pillow_runs, spark_runs = [], []
    for _ in range(repeats):
        pillow_runs.append(pillow_loop(uris, size))
        spark_runs.append(spark_stage(spark, frame, str(root), size))
    pillow, warm = max(pillow_runs), max(spark_runs)
    started = time.perf_counter()
    result = build_dataset(spark, frame, str(root), work / f"{name}-dataset", DatasetConfig(image_size=size))
    full = len(frame) / (time.perf_counter() - started)
    print(
        f"\n{name}: {len(uris)} images -> {size}px ({result.rows} unique, "
        f"{len(result.quarantined)} quarantined, {len(result.duplicates)} duplicates)"
    )
    print(f"  Pillow loop, 1 process          {pillow:8.1f} images/s   (best of {repeats})")
    print(f"  Spark stage, first job          {first:8.1f} images/s   ratio {first / pillow:5.2f}x")
    print(f"  Spark stage, warm               {warm:8.1f} images/s   ratio {warm / pillow:5.2f}x")
    print(f"  Spark full job (dedupe, split, Parquet) {full:8.1f} images/s   ratio {full / pillow:5.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--generated", type=int, default=5000, help="generated images (0 to skip)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--master", default="local[*]")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each; the best counts")
    args = parser.parse_args()

    started = time.perf_counter()
    spark = build_spark_session(args.master, "fish-preprocess-benchmark")
    startup = time.perf_counter() - started
    print(
        f"Spark {spark.version} on {spark.sparkContext.master} "
        f"({spark.sparkContext.defaultParallelism} cores); session start-up {startup:.1f}s; "
        f"{os.cpu_count()} CPUs visible"
    )

    with tempfile.TemporaryDirectory(prefix="fish-bench-") as tmp:
        work = Path(tmp)
        real = Path(os.environ.get("FISH_REAL_DATA_DIR", REPO.parent / "shared" / "data" / "fish4knowledge"))
        if real.is_dir():
            run("fish4knowledge", real, args.size, spark, work, args.repeats)
        else:
            print(f"\nreal photos not found at {real}: skipped (set FISH_REAL_DATA_DIR)")
        if args.generated:
            species = 10
            summary = generate_dataset(
                work / "generated", species=species, per_species=args.generated // species
            )
            run("generated", summary.out_dir, args.size, spark, work, args.repeats)
    spark.stop()


if __name__ == "__main__":
    main()
