"""Sensor ``new_raw_images``: run the graph when new images land under the raw source.

Images already in the manifest under ``FISH_DATA_URI`` are not new. The sensor requests nothing
while a pipeline run is queued or in progress (that run will list the images itself, and a second
run would only build on the same dataset version): so the cursor holds no pending list and stays a
few bytes, however many images arrive. The run key is a hash of the new files' keys, sizes and
modification times, so the same files never trigger two runs.
"""

import hashlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass

import dagster as dg

from fish_platform.data.manifest import manifest_uris
from fish_platform.data.store import RawImage
from fish_platform.jobs import PIPELINE_JOB_NAME
from fish_platform.resources import ImageStoreResource, PlatformResource


class RawSensorResource(dg.ConfigurableResource):
    """Batching rules for the new-image sensor (FISH_SENSOR_MIN_BATCH, FISH_SENSOR_QUIET_SECONDS)."""

    min_batch: int  # fewer new images than this wait for more
    quiet_seconds: float  # wait until no new file is younger than this (uploads settle)


ACTIVE_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def run_key_for(images: Iterable[RawImage]) -> str:
    digest = hashlib.sha256()
    for image in sorted(images, key=lambda i: i.uri):
        digest.update(f"{image.uri}\0{image.size}\0{image.modified:.6f}\n".encode())
    return f"new-images-{digest.hexdigest()[:24]}"


@dataclass(frozen=True)
class Arrivals:
    """One tick's look at the raw source: the new images, and why they should wait (if they should)."""

    new: list[RawImage]
    wait_reason: str | None = None

    @property
    def ready(self) -> bool:
        return bool(self.new) and self.wait_reason is None


def find_new_images(
    listing: list[RawImage], known: set[str], rules: RawSensorResource, now: float
) -> Arrivals:
    """The images not in the manifest, and whether they are ready for a run (settled, enough of them)."""
    new = [image for image in listing if image.uri not in known]
    if not new:
        return Arrivals(new, "no new images")
    youngest = max(image.modified for image in new)
    if now - youngest < rules.quiet_seconds:
        wait = f"{len(new)} new image(s), waiting {rules.quiet_seconds:.0f}s of quiet for uploads to settle"
        return Arrivals(new, wait)
    if len(new) < rules.min_batch:
        return Arrivals(new, f"{len(new)} new image(s), waiting for a batch of {rules.min_batch}")
    return Arrivals(new)


def new_raw_images_sensor(
    minimum_interval_seconds: int = 60, run_config: dict | None = None
) -> dg.SensorDefinition:
    """The sensor, ticking at most every ``minimum_interval_seconds`` (FISH_SENSOR_INTERVAL_SECONDS).

    ``run_config`` (FISH_RUN_CONFIG) goes with every run it requests.
    """

    @dg.sensor(
        name="new_raw_images",
        job_name=PIPELINE_JOB_NAME,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Runs the whole graph when new images arrive under FISH_RAW_URI.",
    )
    def new_raw_images(
        context: dg.SensorEvaluationContext,
        image_store: ImageStoreResource,
        platform: PlatformResource,
        raw_sensor: RawSensorResource,
    ) -> dg.SensorResult | dg.SkipReason:
        return tick(context, image_store, platform, raw_sensor, run_config or {})

    return new_raw_images


def tick(
    context: dg.SensorEvaluationContext,
    image_store: ImageStoreResource,
    platform: PlatformResource,
    raw_sensor: RawSensorResource,
    run_config: dict | None = None,
) -> dg.SensorResult | dg.SkipReason:
    """One evaluation: skip while a pipeline run is active, else request a run for the new images."""
    active = context.instance.get_run_records(
        dg.RunsFilter(job_name=PIPELINE_JOB_NAME, statuses=ACTIVE_STATUSES), limit=1
    )
    if active:
        return dg.SkipReason(
            f"run {active[0].dagster_run.run_id} of {PIPELINE_JOB_NAME} is queued or running"
        )
    layout = platform.layout
    listing = list(image_store.store().list_images())
    arrivals = find_new_images(
        listing, manifest_uris(layout.storage, layout.manifest_uri), raw_sensor, time.time()
    )
    if not arrivals.ready:
        return dg.SkipReason(arrivals.wait_reason)
    new = arrivals.new
    run_key = run_key_for(new)
    cursor = json.dumps({"last_run_key": run_key, "last_new_images": len(new)})
    species = sorted({image.species for image in new})
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=run_key,
                run_config=run_config or {},
                tags={"fish/new_images": str(len(new)), "fish/species": ",".join(species)[:200]},
            )
        ],
        cursor=cursor,
    )


new_raw_images = new_raw_images_sensor()  # with Dagster's defaults, for tests and notebooks
