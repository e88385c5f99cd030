"""Data assets: the raw-image manifest and the Spark-built dataset version, with their checks.

Thin adapters: the work happens in :mod:`fish_platform.data`. Both assets write durable state under
``FISH_DATA_URI`` and sit in the ``fish_dataset_writer`` pool, so two runs never write the manifest,
the processed cache or a dataset version at the same time (see docs/architecture.md).
"""

import dagster as dg

from fish_platform.data.dataset import DatasetConfig, FishDataset, build_dataset
from fish_platform.data.manifest import build_manifest, read_manifest
from fish_platform.data.splits import DEFAULT_FRACTIONS, SPLITS
from fish_platform.pod_sizing import pod_tags
from fish_platform.resources import ImageStoreResource, PlatformResource, SparkResource

DATA_GROUP = "data"
DATASET_WRITER_POOL = "fish_dataset_writer"


def _markdown_table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


@dg.asset(group_name=DATA_GROUP, kinds={"python", "s3"}, pool=DATASET_WRITER_POOL, op_tags=pod_tags("light"))
def raw_fish_images(
    context: dg.AssetExecutionContext, image_store: ImageStoreResource, platform: PlatformResource
) -> dg.MaterializeResult:
    """Manifest of every raw image under the source: uri, species, sha256, bytes, modified time.

    The manifest lives at ``FISH_DATA_URI/manifests/raw_manifest.parquet``; downstream assets and the
    sensor read it from there.
    """
    store = image_store.store()
    layout = platform.layout

    def progress(done: int) -> None:
        if done % 1000 == 0:
            context.log.info(f"listed and hashed {done} images")

    summary = build_manifest(store, layout.storage, layout.manifest_uri, progress)
    context.log.info(
        f"{summary.images} images of {len(summary.species_counts)} species under {store.uri} "
        f"({summary.rehashed} hashed, the rest reused from the previous manifest)"
    )
    return dg.MaterializeResult(
        metadata={
            "source": store.uri,
            "images": summary.images,
            "species": len(summary.species_counts),
            "total_mb": round(summary.total_bytes / 1e6, 2),
            "rehashed": summary.rehashed,
            "manifest": summary.uri,
            "images_per_species": dg.MetadataValue.md(
                _markdown_table(["species", "images"], [[k, v] for k, v in summary.species_counts.items()])
            ),
        },
    )


class FishDatasetConfig(dg.Config):
    """How the Spark job prepares images; unset (None) values take the defaults."""

    image_size: int | None = None  # None: the profile's image size
    train_fraction: float | None = None  # None: DEFAULT_FRACTIONS (0.8 / 0.1 / 0.1)
    val_fraction: float | None = None
    test_fraction: float | None = None

    def fractions(self) -> dict[str, float]:
        given = {"train": self.train_fraction, "val": self.val_fraction, "test": self.test_fraction}
        return {split: DEFAULT_FRACTIONS[split] if value is None else value for split, value in given.items()}


@dg.asset(
    group_name=DATA_GROUP,
    kinds={"spark", "parquet"},
    deps=[raw_fish_images],
    pool=DATASET_WRITER_POOL,
    op_tags=pod_tags("spark"),
)
def fish_dataset(
    context: dg.AssetExecutionContext,
    config: FishDatasetConfig,
    spark: SparkResource,
    image_store: ImageStoreResource,
    platform: PlatformResource,
) -> dg.Output[FishDataset]:
    """A new immutable dataset version: decoded, validated, resized, deduplicated, split, as Parquet.

    Only images not processed by an earlier run are decoded; the version becomes current when it is
    complete, and old versions beyond the retention setting are pruned.
    """
    layout = platform.layout
    retention = {} if platform.dataset_retention is None else {"retention": platform.dataset_retention}
    dataset_config = DatasetConfig(
        image_size=platform.defaults.image_size if config.image_size is None else config.image_size,
        fractions=config.fractions(),
        **retention,
    )
    session = spark.session(context.run_id)
    context.log.info(f"Spark session on {session.sparkContext.master}")
    result = build_dataset(
        session,
        read_manifest(layout.storage, layout.manifest_uri),
        image_store.raw_uri,
        layout,
        dataset_config,
        raw_endpoint=image_store.s3_endpoint_url,
        run_id=context.run_id,
        log=context.log.info,
    )
    rows = [[species] + [result.split_counts[s][species] for s in SPLITS] for species in result.labels]
    quarantine_rows = [[q["uri"], q["reason"], q["detail"] or ""] for q in result.quarantined]
    duplicate_rows = [[d["uri"], d["duplicate_of"]] for d in result.duplicates]
    return dg.Output(
        result,
        metadata={
            "version": result.version.version_id,
            "version_uri": result.version.uri,
            "base_version": result.base_version or "none",
            "rows": result.rows,
            "species": len(result.labels),
            "image_size": result.image_size,
            **{f"{s}_rows": result.split_rows(s) for s in SPLITS},
            "decoded": result.decoded,
            "reused_from_earlier_runs": result.reused,
            "quarantined": len(result.quarantined),
            "duplicates_dropped": len(result.duplicates),
            "pruned_versions": len(result.pruned),
            "duration_s": round(result.duration_s, 2),
            "spark_master": session.sparkContext.master,
            "rows_per_split": dg.MetadataValue.md(_markdown_table(["species", *SPLITS], rows)),
            "quarantined_files": dg.MetadataValue.md(
                _markdown_table(["file", "reason", "detail"], quarantine_rows) if quarantine_rows else "none"
            ),
            "duplicate_files": dg.MetadataValue.md(
                _markdown_table(["dropped", "duplicate of"], duplicate_rows) if duplicate_rows else "none"
            ),
        },
    )


@dg.asset_check(asset=fish_dataset, blocking=True, description="No image (by sha256) appears in two splits.")
def no_image_in_two_splits(fish_dataset: FishDataset) -> dg.AssetCheckResult:
    frame = fish_dataset.version.read_all(["sha256", "split"])
    per_hash = frame.groupby("sha256")["split"].nunique()
    leaks = per_hash[per_hash > 1]
    ledger_frame = fish_dataset.version.read_ledger()
    ledger = dict(zip(ledger_frame["sha256"], ledger_frame["split"], strict=True))
    pairs = zip(frame["sha256"], frame["split"], strict=True)
    moved = sum(1 for sha, split in pairs if ledger.get(sha) != split)
    return dg.AssetCheckResult(
        passed=bool(leaks.empty and moved == 0 and not frame["sha256"].duplicated().any()),
        metadata={"images_in_two_splits": len(leaks), "rows_disagreeing_with_ledger": moved},
    )


@dg.asset_check(asset=fish_dataset, blocking=True, description="Every species has images in every split.")
def every_species_in_every_split(fish_dataset: FishDataset) -> dg.AssetCheckResult:
    missing = [
        f"{species} missing from {split}"
        for split, counts in fish_dataset.split_counts.items()
        for species, count in counts.items()
        if count == 0
    ]
    return dg.AssetCheckResult(passed=not missing, metadata={"missing": ", ".join(missing) or "none"})


@dg.asset_check(asset=fish_dataset, blocking=True, description="Enough images per species.")
def minimum_images_per_species(fish_dataset: FishDataset, platform: PlatformResource) -> dg.AssetCheckResult:
    minimum = platform.min_images_per_species
    if minimum is None:
        minimum = platform.defaults.min_images_per_species
    totals = {
        species: sum(counts[species] for counts in fish_dataset.split_counts.values())
        for species in fish_dataset.labels
    }
    short = {species: n for species, n in totals.items() if n < minimum}
    return dg.AssetCheckResult(
        passed=not short,
        metadata={"minimum": minimum, "fewest": min(totals.values()), "below_minimum": str(short or "none")},
    )


DATA_ASSETS = [raw_fish_images, fish_dataset]
DATA_CHECKS = [no_image_in_two_splits, every_species_in_every_split, minimum_images_per_species]
