"""The PySpark dataset job: decode, validate, resize, dedupe, split, and write an immutable version.

Pure data code: no Dagster. Executors read raw bytes from the raw store and write Parquet straight
to durable storage (``FISH_DATA_URI``, local or S3) from Python inside ``mapInPandas``, so nothing
passes through the driver's disk and Spark needs no Hadoop S3 connector (see docs/architecture.md).

A run is incremental: images whose sha256 was decoded at this size by an earlier run are reused from
the processed cache (``processed/size=<S>/``); only new content is decoded. Each run then writes a
new dataset version (see :mod:`fish_platform.data.layout`) and moves the pointer to it only when the
version is complete, so a crash at any step leaves the previous version, and its ledger, in use.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pandas as pd
import pyarrow as pa

from fish_platform.data.layout import IMAGE_SCHEMA, DatasetVersion, PlatformLayout, new_version_id
from fish_platform.data.splits import DEFAULT_FRACTIONS, SPLITS, assign_splits, validate_fractions
from fish_platform.data.storage import join, open_storage, read_parquet, write_parquet
from fish_platform.data.store import open_store
from fish_platform.imaging import (
    DEFAULT_MAX_PIXELS,
    InvalidImage,
    decode_image,
    encode_png,
    resize_square,
    sha256_hex,
)

# One row per decoded image in the processed cache (``image`` is null for quarantined content).
PROCESSED_COLUMNS = ["sha256", "uri", "status", "reason", "detail", "image", "orig_width", "orig_height"]
# What a decode task hands back to the driver: no image bytes cross to the driver.
DECODED_SCHEMA = (
    "sha256 string, uri string, status string, reason string, detail string, "
    "orig_width int, orig_height int, shard string"
)
DECODED_COLUMNS = ["sha256", "uri", "status", "reason", "detail", "orig_width", "orig_height", "shard"]
WRITTEN_SCHEMA = "split string, rows long, shard string"
SHARD_ROWS = 256  # images per Parquet shard a decode task writes (bounds the task's memory)
# Verdicts that may change on a retry or with another setting are not cached.
UNCACHED_REASONS = frozenset({"read_error", "too_many_pixels"})


@dataclass(frozen=True)
class DatasetConfig:
    image_size: int  # pixels of the square images (the profile's ``image_size`` in the graph)
    fractions: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_FRACTIONS))
    max_pixels: int = DEFAULT_MAX_PIXELS
    partitions: int | None = None  # default: Spark's default parallelism x 4
    retention: int = 3  # complete versions kept (the current one always)


@dataclass(frozen=True)
class FishDataset:
    """A committed dataset version and what it holds: the ``fish_dataset`` asset's output."""

    version: DatasetVersion
    labels: list[str]
    image_size: int
    split_counts: dict[str, dict[str, int]]  # split -> species -> images
    quarantined: list[dict]
    duplicates: list[dict]
    decoded: int  # images decoded by this run
    reused: int  # images taken from the processed cache of earlier runs
    base_version: str | None
    pruned: list[str]
    duration_s: float

    @property
    def rows(self) -> int:
        return sum(sum(counts.values()) for counts in self.split_counts.values())

    def split_rows(self, split: str) -> int:
        return sum(self.split_counts[split].values())


def process_image(store, uri: str, image_size: int, max_pixels: int) -> dict:
    """Bytes -> hash, validation, RGB, resize, PNG; a failure becomes a quarantine row, never raises."""
    row = dict.fromkeys(PROCESSED_COLUMNS)
    row.update(uri=uri, status="ok")
    try:
        data = store.read_bytes(uri)
        row["sha256"] = sha256_hex(data)
        image = decode_image(data, max_pixels)
        row["orig_width"], row["orig_height"] = image.size
        row["image"] = encode_png(resize_square(image, image_size))
    except InvalidImage as exc:
        row.update(status="quarantined", reason=exc.reason, detail=exc.detail[:500])
    except Exception as exc:  # unreadable object: keep going, record why
        row.update(status="quarantined", reason="read_error", detail=f"{type(exc).__name__}: {exc}"[:500])
    return row


def decode_task(
    raw_uri: str,
    raw_endpoint: str | None,
    processed_prefix: str,
    data_endpoint: str | None,
    image_size: int,
    max_pixels: int,
) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """A ``mapInPandas`` function: decode a partition's images and write them as cache shards."""

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        store = open_store(raw_uri, raw_endpoint)
        storage = open_storage(processed_prefix, data_endpoint)
        pending: list[dict] = []

        def flush() -> pd.DataFrame:
            frame = pd.DataFrame(pending, columns=PROCESSED_COLUMNS)
            pending.clear()
            ok = frame["status"] == "ok"
            shard = None
            if ok.any():  # the shard holds decoded images only; verdicts go back to the driver
                shard = join(processed_prefix, f"part-{uuid.uuid4().hex}.parquet")
                good = frame[ok].astype({"orig_width": "int32", "orig_height": "int32"})
                write_parquet(storage, shard, good, row_group_size=16)
            return frame.drop(columns="image").assign(shard=[shard if k else None for k in ok])

        for batch in batches:
            for uri, expected_sha in zip(batch["uri"], batch["sha256"], strict=True):
                row = process_image(store, uri, image_size, max_pixels)
                row["sha256"] = row["sha256"] or expected_sha  # an unreadable object keeps the listed hash
                pending.append(row)
                if len(pending) >= SHARD_ROWS:
                    yield flush()
        if pending:
            yield flush()

    return run


def assemble_task(
    version: DatasetVersion, chosen_broadcast, data_endpoint: str | None
) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """A ``mapInPandas`` function: copy chosen rows of some cache shards into one version shard per split."""

    def run(tasks: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        chosen: dict[str, tuple] = chosen_broadcast.value  # sha256 -> (shard, split, label, species, uri)
        storage = open_storage(version.uri, data_endpoint)
        for batch in tasks:
            for task_id, shards_json in zip(batch["task"], batch["shards"], strict=True):
                rows: list[dict] = []
                for shard in json.loads(shards_json):
                    table = read_parquet(storage, shard, ["sha256", "image", "orig_width", "orig_height"])
                    for sha, image, width, height in table.itertuples(index=False):
                        entry = chosen.get(sha)
                        if entry is None or entry[0] != shard:
                            continue
                        _, split, label, species, uri = entry
                        rows.append(
                            {
                                "sha256": sha,
                                "species": species,
                                "label": label,
                                "split": split,
                                "image": image,
                                "uri": uri,
                                "orig_width": width,
                                "orig_height": height,
                            }
                        )
                out = []
                frame = pd.DataFrame(rows, columns=IMAGE_SCHEMA.names)
                for split, part in frame.groupby("split"):
                    table = pa.Table.from_pandas(part, schema=IMAGE_SCHEMA, preserve_index=False)
                    name = f"{int(task_id):05d}-{uuid.uuid4().hex[:8]}"
                    out.append(
                        {"split": split, "rows": len(part), "shard": version.write_shard(split, name, table)}
                    )
                yield pd.DataFrame(out, columns=["split", "rows", "shard"])

    return run


def read_processed_index(layout: PlatformLayout, image_size: int) -> pd.DataFrame:
    """Every cached verdict at this size: sha256, status, reason, detail, sizes, shard (small files only)."""
    storage = layout.storage
    indexes = [u for u in storage.list(layout.processed_prefix(image_size)) if "/index-" in u]
    if not indexes:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in DECODED_COLUMNS})
    frame = pd.concat([read_parquet(storage, u) for u in indexes], ignore_index=True)
    return frame.drop_duplicates("sha256", keep="first")


def decode_new_images(
    spark,
    todo: pd.DataFrame,
    raw_uri: str,
    raw_endpoint: str | None,
    layout: PlatformLayout,
    config: DatasetConfig,
) -> pd.DataFrame:
    """Decode ``todo`` (uri, sha256) on the executors into the cache; returns their verdicts."""
    if todo.empty:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in DECODED_COLUMNS})
    partitions = config.partitions or max(1, spark.sparkContext.defaultParallelism * 4)
    prefix = layout.processed_prefix(config.image_size)
    frame = (
        spark.createDataFrame(todo[["uri", "sha256"]].sort_values("uri"))
        .repartition(min(partitions, len(todo)))
        .mapInPandas(
            decode_task(
                raw_uri, raw_endpoint, prefix, layout.endpoint_url, config.image_size, config.max_pixels
            ),
            DECODED_SCHEMA,
        )
        .toPandas()
    )
    cacheable = frame[~frame["reason"].isin(UNCACHED_REASONS)]
    if not cacheable.empty:  # one small index per run: later runs read these, never the image shards
        write_parquet(layout.storage, join(prefix, f"index-{uuid.uuid4().hex}.parquet"), cacheable)
    return frame


def choose_images(
    manifest: pd.DataFrame, verdicts: pd.DataFrame
) -> tuple[pd.DataFrame, list[dict], list[dict]]:
    """Join the manifest with verdicts: the unique valid images, the quarantined files, the duplicates."""
    merged = manifest[["uri", "species", "sha256"]].merge(
        verdicts.drop(columns="uri"), on="sha256", how="left", validate="many_to_one"
    )
    bad = merged[merged["status"] != "ok"].sort_values("uri")
    quarantined = [
        {"uri": r.uri, "species": r.species, "reason": r.reason or "read_error", "detail": r.detail}
        for r in bad.itertuples(index=False)
    ]
    good = merged[merged["status"] == "ok"].sort_values("uri")
    first = good.drop_duplicates("sha256", keep="first")
    kept_uri = dict(zip(first["sha256"], first["uri"], strict=True))
    dupes = good[good.duplicated("sha256", keep="first")]
    duplicates = [
        {"uri": r.uri, "species": r.species, "duplicate_of": kept_uri[r.sha256], "sha256": r.sha256}
        for r in dupes.itertuples(index=False)
    ]
    return first.reset_index(drop=True), quarantined, duplicates


def assemble_version(
    spark, version: DatasetVersion, kept: pd.DataFrame, layout: PlatformLayout, rows_per_task: int = 512
) -> dict[str, int]:
    """Copy every kept image from the cache into the version's split shards; returns rows per split."""
    by_shard = kept.groupby("shard").size().sort_index()
    tasks: list[list[str]] = [[]]
    filled = 0
    for shard, count in by_shard.items():
        if filled >= rows_per_task:
            tasks.append([])
            filled = 0
        tasks[-1].append(shard)
        filled += int(count)
    chosen = {
        r.sha256: (r.shard, r.split, int(r.label), r.species, r.uri) for r in kept.itertuples(index=False)
    }
    broadcast = spark.sparkContext.broadcast(chosen)
    try:
        plan = pd.DataFrame({"task": range(len(tasks)), "shards": [json.dumps(t) for t in tasks]})
        written = (
            spark.createDataFrame(plan)
            .repartition(len(tasks))
            .mapInPandas(assemble_task(version, broadcast, layout.endpoint_url), WRITTEN_SCHEMA)
            .toPandas()
        )
    finally:
        broadcast.unpersist()
    counts = {split: int(written.loc[written["split"] == split, "rows"].sum()) for split in SPLITS}
    if sum(counts.values()) != len(kept):
        raise RuntimeError(
            f"version {version.version_id}: wrote {sum(counts.values())} rows, expected {len(kept)}"
        )
    return counts


def write_version_files(
    version: DatasetVersion,
    kept: pd.DataFrame,
    ledger: pd.DataFrame,
    labels: list[str],
    quarantined: list[dict],
    duplicates: list[dict],
    config: DatasetConfig,
    raw_uri: str,
) -> dict[str, dict[str, int]]:
    """The ledger, labels and reports of a version (the marker comes after, separately)."""
    assigned = kept[["sha256", "split", "species"]]
    version.write_ledger(pd.concat([ledger[~ledger["sha256"].isin(assigned["sha256"])], assigned]))
    split_counts = {split: dict.fromkeys(labels, 0) for split in SPLITS}
    for (split, species), n in kept.groupby(["split", "species"]).size().items():
        split_counts[split][species] = int(n)
    version.write_reports(quarantined, duplicates)
    version.write_labels(
        {
            "labels": labels,
            "image_size": config.image_size,
            "fractions": dict(config.fractions),
            "split_counts": split_counts,
            "source": raw_uri,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    )
    return split_counts


def build_dataset(
    spark,
    manifest: pd.DataFrame,
    raw_uri: str,
    layout: PlatformLayout,
    config: DatasetConfig,
    raw_endpoint: str | None = None,
    run_id: str | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> FishDataset:
    """Build a new dataset version from ``manifest`` (uri, species, sha256) and make it current."""
    fractions = validate_fractions(config.fractions)
    started = time.perf_counter()
    base = layout.current_version()
    version = layout.version(new_version_id(run_id))
    log(f"building dataset version {version.version_id} on {base.version_id if base else 'nothing'}")

    index = read_processed_index(layout, config.image_size)
    todo = manifest[~manifest["sha256"].isin(index["sha256"])].drop_duplicates("sha256")
    log(
        f"{len(manifest)} images listed: {len(todo)} new content to decode at {config.image_size}px, "
        f"{manifest['sha256'].nunique() - len(todo)} reused from earlier runs"
    )
    fresh = decode_new_images(spark, todo, raw_uri, raw_endpoint, layout, config)
    parts = [frame for frame in (index[index["sha256"].isin(manifest["sha256"])], fresh) if not frame.empty]
    verdicts = pd.concat(parts, ignore_index=True) if parts else fresh
    verdicts = verdicts.drop_duplicates("sha256", keep="last")
    kept, quarantined, duplicates = choose_images(manifest, verdicts)
    log(
        f"decoded: {len(quarantined)} file(s) quarantined, {len(duplicates)} duplicate(s) dropped, "
        f"{len(kept)} unique images"
    )
    if kept.empty:
        raise ValueError("no valid images left after validation: every file was quarantined")

    ledger = base.read_ledger() if base else pd.DataFrame(columns=["sha256", "split", "species"])
    assignment = assign_splits(
        zip(kept["sha256"], kept["species"], strict=True),
        dict(zip(ledger["sha256"], ledger["split"], strict=True)),
        fractions,
    )
    labels = sorted(kept["species"].unique())
    kept = kept.assign(
        split=kept["sha256"].map(assignment), label=kept["species"].map({s: i for i, s in enumerate(labels)})
    )
    assemble_version(spark, version, kept, layout)
    split_counts = write_version_files(
        version, kept, ledger, labels, quarantined, duplicates, config, raw_uri
    )
    version.write_marker(
        {
            "version": version.version_id,
            "base": base.version_id if base else None,
            "rows": len(kept),
            "run_id": run_id,
        }
    )
    layout.commit(version, base)
    pruned = layout.prune(config.retention)
    log(f"dataset version {version.version_id} is current; pruned {len(pruned)} old version(s)")
    return FishDataset(
        version=version,
        labels=labels,
        image_size=config.image_size,
        split_counts=split_counts,
        quarantined=quarantined,
        duplicates=duplicates,
        decoded=len(todo),
        reused=int(manifest["sha256"].nunique() - len(todo)),
        base_version=base.version_id if base else None,
        pruned=pruned,
        duration_s=time.perf_counter() - started,
    )
