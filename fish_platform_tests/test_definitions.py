"""The code location loads and validates as users load it."""

import os
import subprocess
import sys

import dagster as dg

from fish_platform_tests.helpers import REPO_ROOT


def test_definitions_load_with_every_asset_check_sensor_and_schedule(tmp_path, monkeypatch):
    monkeypatch.setenv("FISH_DATA_DIR", str(tmp_path))
    import importlib

    import fish_platform.definitions as module

    defs = importlib.reload(module).defs()
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert {
        "raw_fish_images",
        "fish_dataset",
        "fish_classifier",
        "model_evaluation",
        "production_model",
    } <= keys
    assert defs.resolve_sensor_def("new_raw_images") is not None
    schedule = defs.resolve_schedule_def("periodic_retrain")
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    checks = {key.name for key in graph.asset_check_keys}
    assert {"no_image_in_two_splits", "every_species_in_every_split", "minimum_images_per_species"} <= checks
    assert {"model_beats_chance", "behaviour_flip", "behaviour_not_a_fish"} <= checks


def test_dagster_cli_validates_the_module(tmp_path):
    env = {**os.environ, "FISH_DATA_DIR": str(tmp_path), "DAGSTER_HOME": str(tmp_path)}
    dagster = os.path.join(os.path.dirname(sys.executable), "dagster")
    result = subprocess.run(
        [dagster, "definitions", "validate", "-m", "fish_platform.definitions"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_daily_drift_schedule_asks_for_yesterdays_partition(tmp_path):
    from datetime import UTC, datetime

    from fish_platform.schedules import prediction_drift_schedule

    schedule = prediction_drift_schedule("http://fish-serving:3000")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING  # a deployment watches itself
    assert prediction_drift_schedule(None).default_status == dg.DefaultScheduleStatus.STOPPED
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        context = dg.build_schedule_context(
            instance=instance, scheduled_execution_time=datetime(2026, 3, 1, 0, 30, tzinfo=UTC)
        )
        request = schedule(context)  # the schedule's function (a tick also needs the repository)
    assert request.partition_key == "2026-02-28"  # the whole of the day before, not the one just begun
    assert request.run_key == "prediction_drift-2026-02-28"
