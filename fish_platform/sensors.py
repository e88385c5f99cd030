"""Sensor ``new_raw_images``: run the graph when new images land under the raw source.

Images already in the latest manifest, or already requested by an earlier tick (kept in the
cursor until a manifest includes them), are not new. The run key is a hash of the new files'
keys, sizes and modification times, so the same files never trigger two runs.
"""

import hashlib
import json
import time
from collections.abc import Iterable

import dagster as dg
import pandas as pd

from fish_platform.data.store import RawImage
from fish_platform.resources import ImageStoreResource, PlatformResource

PIPELINE_JOB_NAME = "fish_pipeline"


class RawSensorResource(dg.ConfigurableResource):
    """Batching rules for the new-image sensor."""

    min_batch: int = 1  # fewer new images than this wait for more
    quiet_seconds: float = 30.0  # wait until no new file is younger than this (uploads settle)


def _known_uris(platform: PlatformResource) -> set[str]:
    path = platform.manifest_dir / "raw_manifest.parquet"
    if not path.exists():
        return set()
    return set(pd.read_parquet(path, columns=["uri"])["uri"])


def run_key_for(images: Iterable[RawImage]) -> str:
    digest = hashlib.sha256()
    for image in sorted(images, key=lambda i: i.uri):
        digest.update(f"{image.uri}\0{image.size}\0{image.modified:.6f}\n".encode())
    return f"new-images-{digest.hexdigest()[:24]}"


def evaluate_new_images(
    listing: list[RawImage], known: set[str], pending: set[str], rules: RawSensorResource, now: float
) -> tuple[list[RawImage] | str, set[str]]:
    """Decide on one tick: the new images to request, or a reason to skip; and the pending set."""
    pending = pending - known
    new = [image for image in listing if image.uri not in known and image.uri not in pending]
    if not new:
        return "no new images", pending
    youngest = max(image.modified for image in new)
    if now - youngest < rules.quiet_seconds:
        return (
            f"{len(new)} new image(s), waiting {rules.quiet_seconds:.0f}s of quiet for uploads to settle",
            pending,
        )
    if len(new) < rules.min_batch:
        return f"{len(new)} new image(s), waiting for a batch of {rules.min_batch}", pending
    return new, pending | {image.uri for image in new}


@dg.sensor(
    job_name=PIPELINE_JOB_NAME,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Runs the whole graph when new images arrive under FISH_RAW_URI.",
)
def new_raw_images(
    context: dg.SensorEvaluationContext,
    image_store: ImageStoreResource,
    platform: PlatformResource,
    raw_sensor: RawSensorResource,
) -> dg.SensorResult | dg.SkipReason:
    state = json.loads(context.cursor) if context.cursor else {}
    listing = list(image_store.store().list_images())
    decision, pending = evaluate_new_images(
        listing, _known_uris(platform), set(state.get("pending", [])), raw_sensor, time.time()
    )
    cursor = json.dumps({"pending": sorted(pending)})
    if isinstance(decision, str):
        context.update_cursor(cursor)
        return dg.SkipReason(decision)
    species = sorted({image.species for image in decision})
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=run_key_for(decision),
                tags={"fish/new_images": str(len(decision)), "fish/species": ",".join(species)[:200]},
            )
        ],
        cursor=cursor,
    )
