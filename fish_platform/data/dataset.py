"""The PySpark dataset job: decode, validate, resize, dedupe, split and write Parquet.

Pure data code: no Dagster. The job reads bytes through the image store named in the
manifest (local path or S3), so it runs unchanged on ``local[*]`` or a cluster whose
workers can reach the store.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from fish_platform.data.splits import DEFAULT_FRACTIONS, SPLITS, assign_splits, validate_fractions
from fish_platform.data.store import open_store
from fish_platform.imaging import (
    DEFAULT_MAX_PIXELS,
    InvalidImage,
    decode_image,
    encode_png,
    resize_square,
    sha256_hex,
)

PROCESSED_SCHEMA = (
    "uri string, species string, sha256 string, status string, reason string, detail string, "
    "image binary, orig_width int, orig_height int"
)


@dataclass(frozen=True)
class DatasetConfig:
    image_size: int = 128
    fractions: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_FRACTIONS))
    max_pixels: int = DEFAULT_MAX_PIXELS
    partitions: int | None = None  # default: Spark's default parallelism x 4


@dataclass
class DatasetResult:
    output_dir: Path
    labels: list[str]
    split_counts: dict[str, dict[str, int]]  # split -> species -> rows
    quarantined: list[dict]
    duplicates: list[dict]
    rows: int
    duration_s: float

    @property
    def images_dir(self) -> Path:
        return self.output_dir / "images"


def process_partition(
    store_uri: str, endpoint_url: str | None, image_size: int, max_pixels: int
) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """A ``mapInPandas`` function: bytes -> hash, validation, RGB, resize, PNG.

    Failures become rows with ``status='quarantined'`` and a reason, never exceptions, so
    one bad file cannot fail the job.
    """

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        store = open_store(store_uri, endpoint_url)
        for batch in batches:
            out = []
            for uri, species in zip(batch["uri"], batch["species"], strict=True):
                row = {
                    "uri": uri,
                    "species": species,
                    "sha256": None,
                    "status": "ok",
                    "reason": None,
                    "detail": None,
                    "image": None,
                    "orig_width": None,
                    "orig_height": None,
                }
                try:
                    data = store.read_bytes(uri)
                    row["sha256"] = sha256_hex(data)
                    image = decode_image(data, max_pixels)
                    row["orig_width"], row["orig_height"] = image.size
                    row["image"] = encode_png(resize_square(image, image_size))
                except InvalidImage as exc:
                    row.update(status="quarantined", reason=exc.reason, detail=exc.detail[:500])
                except Exception as exc:  # unreadable object: keep going, record why
                    detail = f"{type(exc).__name__}: {exc}"[:500]
                    row.update(status="quarantined", reason="read_error", detail=detail)
                out.append(row)
            yield pd.DataFrame(out, columns=[c.split()[0] for c in PROCESSED_SCHEMA.split(", ")])

    return run


LEDGER_COLUMNS = ["sha256", "split", "species"]


def read_ledger(output_dir: Path) -> pd.DataFrame:
    """Every image ever assigned a split (``sha256``, ``split``, ``species``), kept across runs."""
    path = output_dir / "splits.parquet"
    if not path.exists():
        return pd.DataFrame({column: pd.Series(dtype="object") for column in LEDGER_COLUMNS})
    return pd.read_parquet(path, columns=LEDGER_COLUMNS)


def _write_ledger(output_dir: Path, ledger: pd.DataFrame) -> None:
    tmp = output_dir / "splits.parquet.tmp"
    ledger.to_parquet(tmp, index=False)
    tmp.replace(output_dir / "splits.parquet")


def build_dataset(
    spark,
    manifest: pd.DataFrame,
    store_uri: str,
    output_dir: Path,
    config: DatasetConfig = DatasetConfig(),
    endpoint_url: str | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> DatasetResult:
    """Run the Spark job over the images in ``manifest`` and write the dataset to ``output_dir``.

    The previous dataset stays in place until the new one is complete: images are written to
    a temporary folder and swapped in at the end.
    """
    from pyspark import StorageLevel
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    fractions = validate_fractions(config.fractions)
    started = time.perf_counter()
    output_dir.mkdir(parents=True, exist_ok=True)

    partitions = config.partitions or max(1, spark.sparkContext.defaultParallelism * 4)
    inputs = spark.createDataFrame(manifest[["uri", "species"]].sort_values("uri")).repartition(partitions)
    processed = inputs.mapInPandas(
        process_partition(store_uri, endpoint_url, config.image_size, config.max_pixels), PROCESSED_SCHEMA
    ).persist(StorageLevel.MEMORY_AND_DISK)
    log(f"decoding and resizing {len(manifest)} images to {config.image_size}px in {partitions} partitions")

    bad = processed.filter(F.col("status") != "ok").select("uri", "species", "reason", "detail")
    quarantined = [r.asDict() for r in bad.collect()]
    quarantined.sort(key=lambda r: r["uri"])
    log(f"decoded: {len(quarantined)} file(s) quarantined")

    # Deduplicate on the narrow columns only, so no image bytes cross a shuffle.
    by_hash = Window.partitionBy("sha256").orderBy("uri")
    ranked = (
        processed.filter(F.col("status") == "ok")
        .select("uri", "species", "sha256")
        .withColumn("dup_rank", F.row_number().over(by_hash))
        .withColumn("kept_uri", F.first("uri").over(by_hash))
        .collect()
    )
    duplicates = sorted(
        (
            {"uri": r.uri, "species": r.species, "duplicate_of": r.kept_uri, "sha256": r.sha256}
            for r in ranked
            if r.dup_rank > 1
        ),
        key=lambda r: r["uri"],
    )
    kept = [r for r in ranked if r.dup_rank == 1]
    keys = [(r.sha256, r.species) for r in kept]
    if not keys:
        raise ValueError("no valid images left after validation: every file was quarantined")
    log(f"deduplicated: {len(duplicates)} exact duplicate(s) dropped, {len(keys)} unique images")

    ledger = read_ledger(output_dir)
    assignment = assign_splits(keys, dict(zip(ledger["sha256"], ledger["split"], strict=True)), fractions)
    labels = sorted({species for _, species in keys})
    label_of = {name: index for index, name in enumerate(labels)}
    chosen = spark.createDataFrame(
        pd.DataFrame(
            {
                "uri": [r.uri for r in kept],
                "split": [assignment[r.sha256] for r in kept],
                "label": pd.Series([label_of[r.species] for r in kept], dtype="int32"),
            }
        )
    )
    final = processed.join(F.broadcast(chosen), "uri").select(
        "sha256", "species", "label", "split", "image", "uri", "orig_width", "orig_height"
    )
    staging = output_dir / f".images-{uuid.uuid4().hex[:8]}"
    final.write.mode("overwrite").partitionBy("split").parquet(str(staging))
    processed.unpersist()

    images_dir = output_dir / "images"
    if images_dir.exists():
        shutil.rmtree(images_dir)
    staging.rename(images_dir)
    species_of = dict(keys)
    assigned = pd.DataFrame(
        {
            "sha256": list(assignment),
            "split": list(assignment.values()),
            "species": [species_of[s] for s in assignment],
        }
    )
    _write_ledger(
        output_dir, pd.concat([ledger[~ledger["sha256"].isin(assignment)], assigned], ignore_index=True)
    )

    split_counts: dict[str, dict[str, int]] = {name: {s: 0 for s in labels} for name in SPLITS}
    for sha, split in assignment.items():
        split_counts[split][species_of[sha]] += 1
    duration = time.perf_counter() - started
    (output_dir / "labels.json").write_text(
        json.dumps(
            {
                "labels": labels,
                "image_size": config.image_size,
                "fractions": fractions,
                "split_counts": split_counts,
                "source": store_uri,
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
            indent=2,
        )
    )
    (output_dir / "quarantine.json").write_text(json.dumps(quarantined, indent=2))
    (output_dir / "duplicates.json").write_text(json.dumps(duplicates, indent=2))
    return DatasetResult(
        output_dir=output_dir,
        labels=labels,
        split_counts=split_counts,
        quarantined=quarantined,
        duplicates=duplicates,
        rows=len(keys),
        duration_s=duration,
    )


def read_split(output_dir: Path, split: str, columns: list[str] | None = None) -> pd.DataFrame:
    """Rows of one split as a DataFrame (for tests, evaluation and small tools)."""
    return pd.read_parquet(output_dir / "images" / f"split={split}", columns=columns)


def read_labels(output_dir: Path) -> dict:
    return json.loads((output_dir / "labels.json").read_text())
