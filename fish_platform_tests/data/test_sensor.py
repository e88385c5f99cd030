"""The new-image sensor: one run per new batch, never a run for nothing, a bounded cursor."""

import json
import os
import time

import dagster as dg

from fish_platform.assets.data import raw_fish_images
from fish_platform.sensors import RawSensorResource, new_raw_images
from fish_platform_tests.helpers import dagster_resources, write_image


def _tick(raw, data_dir, cursor=None, instance=None, **sensor_rules):
    resources = dagster_resources(str(raw), data_dir)
    resources["raw_sensor"] = RawSensorResource(**{"min_batch": 1, "quiet_seconds": 0, **sensor_rules})
    instance = instance or dg.DagsterInstance.ephemeral()
    context = dg.build_sensor_context(cursor=cursor, resources=resources, instance=instance)
    result = new_raw_images(context)
    return result, result.cursor if isinstance(result, dg.SensorResult) else context.cursor


def _requests(result):
    return result.run_requests if isinstance(result, dg.SensorResult) else []


def test_fires_once_per_new_batch_and_never_for_nothing(colour_images, data_dir):
    first, cursor = _tick(colour_images, data_dir)
    assert len(_requests(first)) == 1
    assert _requests(first)[0].tags["fish/new_images"] == "48"

    # Before the run starts, the same files give the same run key: Dagster launches nothing twice
    # (once the run is queued, the sensor skips: test_waits_while_a_pipeline_run_is_queued_or_running).
    again, cursor = _tick(colour_images, data_dir, cursor)
    assert _requests(again)[0].run_key == _requests(first)[0].run_key

    # The run happens: the manifest under the data URI now holds every image.
    assert dg.materialize(
        [raw_fish_images], resources=dagster_resources(str(colour_images), data_dir)
    ).success
    after_run, cursor = _tick(colour_images, data_dir, cursor)
    assert isinstance(after_run, dg.SkipReason) and "no new images" in after_run.skip_message

    write_image(colour_images / "Shrimp" / "late-1.png", (50, 70, 210), seed=7)
    write_image(colour_images / "Shrimp" / "late-2.png", (50, 70, 210), seed=8)
    batch, cursor = _tick(colour_images, data_dir, cursor)
    assert len(_requests(batch)) == 1
    assert _requests(batch)[0].tags["fish/new_images"] == "2"
    assert _requests(batch)[0].run_key != _requests(first)[0].run_key
    repeat, _ = _tick(colour_images, data_dir, cursor)
    assert _requests(repeat)[0].run_key == _requests(batch)[0].run_key  # deduplicated by Dagster


def test_same_files_give_the_same_run_key(colour_images, data_dir):
    one, _ = _tick(colour_images, data_dir)
    two, _ = _tick(colour_images, data_dir)  # a fresh cursor: Dagster dedupes by run key
    assert _requests(one)[0].run_key == _requests(two)[0].run_key


def test_waits_for_quiet_and_for_a_minimum_batch(colour_images, data_dir):
    quiet, _ = _tick(colour_images, data_dir, quiet_seconds=3600)
    assert isinstance(quiet, dg.SkipReason) and "quiet" in quiet.skip_message

    small, _ = _tick(colour_images, data_dir, min_batch=100)
    assert isinstance(small, dg.SkipReason) and "batch of 100" in small.skip_message

    old = time.time() - 7200
    for path in colour_images.rglob("*.*"):
        os.utime(path, (old, old))
    settled, _ = _tick(colour_images, data_dir, quiet_seconds=3600)
    assert len(_requests(settled)) == 1


def test_waits_while_a_pipeline_run_is_queued_or_running(colour_images, data_dir):
    """A second run would build on the same dataset version: the sensor waits for the first."""
    from fish_platform.jobs import PIPELINE_JOB_NAME

    with dg.instance_for_test() as instance:
        run = instance.add_run(dg.DagsterRun(job_name=PIPELINE_JOB_NAME, status=dg.DagsterRunStatus.STARTED))
        busy, _ = _tick(colour_images, data_dir, instance=instance)
        assert isinstance(busy, dg.SkipReason) and run.run_id in busy.skip_message
        instance.report_run_failed(run)
        free, _ = _tick(colour_images, data_dir, instance=instance)
        assert len(_requests(free)) == 1


def test_cursor_stays_small_however_many_images_arrive(tmp_path, data_dir):
    raw = tmp_path / "raw"
    for i in range(400):
        write_image(raw / f"species{i % 4}" / f"{i}.png", (10 * (i % 4), 80, 120), size=(8, 8), seed=i)
    result, cursor = _tick(raw, data_dir)
    assert result.run_requests[0].tags["fish/new_images"] == "400"
    assert len(cursor) < 200 and json.loads(cursor)["last_new_images"] == 400
