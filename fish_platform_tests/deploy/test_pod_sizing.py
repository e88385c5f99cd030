"""Each step's pod size, computed by dagster-k8s itself from the rendered Helm values and the Definitions.

With ``FISH_EXECUTOR=k8s`` every step is a pod: dagster-k8s merges the run launcher's container
config (k8s/dagster/values*.yaml) with the step's ``dagster-k8s/config`` op tag. The code server's
own size never reaches a step.
"""

import importlib

import pytest

from fish_platform.pod_sizing import SIZES
from fish_platform_tests.deploy.dagster_pods import RELEASES, merged, run_pod


def _definitions(monkeypatch, tmp_path, **env):
    monkeypatch.setenv("FISH_DATA_DIR", str(tmp_path))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    import fish_platform.assets.model as model_assets
    import fish_platform.definitions as definitions

    importlib.reload(model_assets)
    return importlib.reload(definitions).defs()


def _step_pod(values, defs, asset_name):
    tags = defs.resolve_assets_def(asset_name).op.tags
    return run_pod(values, run_tags=tags)


def _resources(pod):
    (container,) = pod["spec"]["containers"]
    return container.get("resources", {})


@pytest.mark.parametrize("release", ["local", "yandex"])
def test_training_gets_the_training_size_and_light_steps_stay_light(release, monkeypatch, tmp_path):
    defs = _definitions(monkeypatch, tmp_path, FISH_EXECUTOR="k8s")
    assert defs.resolve_job_def("fish_pipeline").executor_def.name == "k8s"
    values = merged(*RELEASES[release])
    assert _resources(_step_pod(values, defs, "fish_classifier")) == SIZES["training"]
    assert _resources(_step_pod(values, defs, "fish_dataset")) == SIZES["spark"]
    assert _resources(_step_pod(values, defs, "raw_fish_images")) == SIZES["light"]
    # An asset check step has no tag: the run launcher's default, never the code server's.
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]["resources"]
    assert _resources(run_pod(values, run_tags={})) == launcher
    assert launcher != SIZES["training"]


def test_a_gpu_setting_puts_training_on_the_gpu_node_group(monkeypatch, tmp_path):
    defs = _definitions(monkeypatch, tmp_path, FISH_EXECUTOR="k8s", FISH_TRAIN_GPUS="1")
    pod = _step_pod(merged(*RELEASES["yandex"]), defs, "fish_classifier")
    resources = _resources(pod)
    assert resources["limits"]["nvidia.com/gpu"] == "1" and resources["requests"]["nvidia.com/gpu"] == "1"
    assert pod["spec"]["nodeSelector"] == {"fish-platform.io/node-pool": "gpu"}
    toleration = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    assert toleration in pod["spec"]["tolerations"]
    light = _step_pod(merged(*RELEASES["yandex"]), defs, "raw_fish_images")
    assert "nvidia.com/gpu" not in str(_resources(light)) and "nodeSelector" not in light["spec"]


def test_one_machine_runs_steps_in_the_runs_process_unless_told(monkeypatch, tmp_path):
    monkeypatch.delenv("FISH_EXECUTOR", raising=False)
    defs = _definitions(monkeypatch, tmp_path)
    assert defs.resolve_job_def("fish_pipeline").executor_def.name == "in_process"
    defs = _definitions(monkeypatch, tmp_path, FISH_EXECUTOR="multiprocess")
    assert defs.resolve_job_def("fish_pipeline").executor_def.name == "multi_or_in_process_executor"


def test_the_charts_instance_config_loads_and_serializes_dataset_writers(tmp_path):
    """The instance settings the Helm values add (additionalInstanceConfig) are valid for Dagster itself."""
    import dagster as dg
    import yaml

    from fish_platform.assets.data import DATASET_WRITER_POOL, fish_dataset, raw_fish_images

    values = merged(*RELEASES["yandex"])
    coordinator = values["dagsterDaemon"]["runCoordinator"]
    assert coordinator["type"] == "QueuedRunCoordinator"
    instance = {
        **values["additionalInstanceConfig"],
        "run_coordinator": {
            "module": "dagster._core.run_coordinator",
            "class": coordinator["type"],
            "config": {},
        },
        "telemetry": {"enabled": False},
    }
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(instance))
    with dg.DagsterInstance.from_config(str(tmp_path)) as loaded:
        config = loaded.get_concurrency_config()
    assert config.pool_config.default_pool_limit == 1
    assert config.run_queue_config.max_concurrent_runs == 2
    assert {raw_fish_images.op.pool, fish_dataset.op.pool} == {DATASET_WRITER_POOL}
