"""The new-image sensor: one run per new batch, never a run for nothing."""

import json
import os
import time

import dagster as dg

from fish_platform.assets.data import raw_fish_images
from fish_platform.sensors import RawSensorResource, new_raw_images
from fish_platform_tests.helpers import dagster_resources, write_image


def _tick(raw, data_dir, cursor=None, **sensor_rules):
    resources = dagster_resources(str(raw), data_dir)
    resources["raw_sensor"] = RawSensorResource(**{"min_batch": 1, "quiet_seconds": 0, **sensor_rules})
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(cursor=cursor, resources=resources, instance=instance)
        result = new_raw_images(context)
        return result, result.cursor if isinstance(result, dg.SensorResult) else context.cursor


def _requests(result):
    return result.run_requests if isinstance(result, dg.SensorResult) else []


def test_fires_once_per_new_batch_and_never_for_nothing(colour_images, data_dir):
    first, cursor = _tick(colour_images, data_dir)
    assert len(_requests(first)) == 1
    assert _requests(first)[0].tags["fish/new_images"] == "48"

    again, cursor = _tick(colour_images, data_dir, cursor)
    assert isinstance(again, dg.SkipReason) and "no new images" in again.skip_message

    # The run happens: the manifest now holds every image, and the cursor forgets them.
    assert dg.materialize(
        [raw_fish_images], resources=dagster_resources(str(colour_images), data_dir)
    ).success
    after_run, cursor = _tick(colour_images, data_dir, cursor)
    assert isinstance(after_run, dg.SkipReason)
    assert json.loads(cursor)["pending"] == []

    write_image(colour_images / "Shrimp" / "late-1.png", (50, 70, 210), seed=7)
    write_image(colour_images / "Shrimp" / "late-2.png", (50, 70, 210), seed=8)
    batch, cursor = _tick(colour_images, data_dir, cursor)
    assert len(_requests(batch)) == 1
    assert _requests(batch)[0].tags["fish/new_images"] == "2"
    assert _requests(batch)[0].run_key != _requests(first)[0].run_key
    repeat, _ = _tick(colour_images, data_dir, cursor)
    assert isinstance(repeat, dg.SkipReason)


def test_same_files_give_the_same_run_key(colour_images, data_dir):
    one, _ = _tick(colour_images, data_dir)
    two, _ = _tick(colour_images, data_dir)  # a fresh cursor: Dagster dedupes by run key
    assert _requests(one)[0].run_key == _requests(two)[0].run_key


def test_waits_for_quiet_and_for_a_minimum_batch(colour_images, data_dir):
    quiet, cursor = _tick(colour_images, data_dir, quiet_seconds=3600)
    assert isinstance(quiet, dg.SkipReason) and "quiet" in quiet.skip_message
    assert json.loads(cursor)["pending"] == []  # nothing was requested, so nothing is pending

    small, _ = _tick(colour_images, data_dir, min_batch=100)
    assert isinstance(small, dg.SkipReason) and "batch of 100" in small.skip_message

    old = time.time() - 7200
    for path in colour_images.rglob("*.*"):
        os.utime(path, (old, old))
    settled, _ = _tick(colour_images, data_dir, quiet_seconds=3600)
    assert len(_requests(settled)) == 1
