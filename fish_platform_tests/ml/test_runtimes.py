"""Runtime classes: Keras' probabilities at any batch size, threads from the CPU limit, no TensorFlow."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from fish_platform.ml import runtimes
from fish_platform.ml.optimize import check_parity, reference_probabilities
from fish_platform.ml.runtimes import (
    LiteRTClassifier,
    OnnxClassifier,
    OpenVINOClassifier,
    TensorFlowClassifier,
    cgroup_cpu_limit,
    cpu_threads_from_limit,
    load_runtime,
    parse_cpu_quantity,
)
from fish_platform_tests.helpers import REPO_ROOT
from fish_platform_tests.ml.runtime_helpers import artifacts, colour_images

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return artifacts("tiny", tmp_path_factory.getbasetemp())


# --- thread counts -------------------------------------------------------------------------------


def test_cpu_quantities():
    assert parse_cpu_quantity("2") == 2.0 and parse_cpu_quantity("1.5") == 1.5
    assert parse_cpu_quantity("500m") == 0.5 and parse_cpu_quantity(3) == 3.0
    for bad in ("0", "-1", "two", "", True):
        with pytest.raises(ValueError):
            parse_cpu_quantity(bad)


def test_threads_follow_the_cgroup_limit_not_the_node(tmp_path, monkeypatch):
    monkeypatch.setattr(runtimes, "_allowed_cpus", lambda: 64)  # a big node without a cpuset
    cpu_max = tmp_path / "cpu.max"
    no_v1 = tmp_path / "no-v1"

    def threads(text: str | None = None, **kwargs) -> int:
        if text is not None:
            cpu_max.write_text(text)
        return cpu_threads_from_limit(cpu_max_path=cpu_max, v1_dir=no_v1, **kwargs)

    assert threads("200000 100000\n") == 2  # 2 CPUs of 64
    assert threads("150000 100000\n") == 1  # 1.5 -> 1: a second thread would be throttled
    assert threads("50000 100000\n") == 1  # at least one
    assert threads("400000 200000\n") == 2  # quota / period
    assert cgroup_cpu_limit(cpu_max, no_v1) == 2.0
    assert threads("max 100000\n") == 64  # no limit: the CPUs this process may use
    assert threads("max 100000\n", default=3) == 3
    assert threads("max 100000\n", limit="1500m") == 1  # an explicit value wins
    assert threads("200000 100000\n", limit=4) == 4

    cpu_max.unlink()  # cgroup v1
    v1 = tmp_path / "v1"
    v1.mkdir()
    (v1 / "cpu.cfs_quota_us").write_text("300000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert cpu_threads_from_limit(cpu_max_path=cpu_max, v1_dir=v1) == 3
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_limit(cpu_max, v1) is None

    monkeypatch.setattr(runtimes, "_allowed_cpus", lambda: 2)  # a cpuset of 2: never more than that
    assert threads("800000 100000\n") == 2


# --- runtimes against Keras ----------------------------------------------------------------------


def _all_runtimes(tiny) -> list:
    return [
        OpenVINOClassifier(tiny.openvino, threads=2),  # THROUGHPUT: a batch split across streams
        OpenVINOClassifier(tiny.openvino, threads=2, hint="latency"),
        LiteRTClassifier(tiny.litert, threads=2),
        OnnxClassifier(tiny.onnx, threads=2),
        TensorFlowClassifier(tiny.model, threads=2),
    ]


def test_runtimes_give_the_keras_probabilities(tiny):
    images, labels = colour_images(75, seed=51)
    reference = reference_probabilities(tiny.model, images)
    assert (reference.argmax(axis=1) == labels).mean() >= 0.98
    for runtime in _all_runtimes(tiny):
        assert runtime.name in runtimes.RUNTIME_NAMES
        assert (runtime.image_size, runtime.n_classes) == (32, 4)
        assert runtime.threads == 2 or runtime.name == "tensorflow"  # TF's pool is fixed once it ran
        probs = runtime.predict_arrays(images)
        assert probs.dtype == np.float32 and probs.shape == (75, 4)
        report = check_parity(reference, probs)
        assert report.passed and report.max_abs_diff < 1e-5, f"{runtime.name}: {report.reason}"
        # any batch size, in any order (LiteRT resizes, OpenVINO keeps a dynamic batch)
        for n in (1, 32, 3, 1):
            np.testing.assert_allclose(runtime.predict_arrays(images[:n]), reference[:n], atol=1e-5)
        assert runtime.predict_arrays(images[:0]).shape == (0, 4)
        as_uint8 = np.round(images[:4]).astype(np.uint8)  # the serving path holds uint8 batches
        np.testing.assert_allclose(
            runtime.predict_arrays(as_uint8), runtime.predict_arrays(as_uint8.astype(np.float32)), atol=1e-6
        )
        with pytest.raises(ValueError):
            runtime.predict_arrays(np.zeros((2, 48, 48, 3), np.float32))
        with pytest.raises(ValueError):
            runtime.predict_arrays(np.zeros((32, 32, 3), np.float32))


def test_runtimes_give_the_keras_feature_map(tiny, tmp_path):
    """The second output (for maps and embeddings) is the feature map Keras' head pools, on every runtime."""
    from fish_platform.ml.explain import cam_model
    from fish_platform.ml.optimize import convert_to_openvino, export_saved_model

    images, _ = colour_images(9, seed=52)
    expected = np.asarray(cam_model(tiny.model)(images, training=False)[1])
    chunked = OpenVINOClassifier(tiny.openvino, threads=2, max_batch=4)  # chunks and streams concatenated
    for runtime in [*_all_runtimes(tiny), chunked]:
        assert runtime.has_features, runtime.name
        probs, features = runtime.predict_with_features(images)
        np.testing.assert_allclose(probs, runtime.predict_arrays(images), atol=1e-6)
        assert features.dtype == np.float32 and features.shape == expected.shape
        np.testing.assert_allclose(features, expected, atol=1e-4, err_msg=runtime.name)
        assert runtime.predict_with_features(images[:0])[1] is None
    # A model exported before feature maps existed (probabilities only) still loads and answers.
    saved = export_saved_model(tiny.model, tmp_path / "plain", with_features=False)
    plain = OpenVINOClassifier(convert_to_openvino(saved, tmp_path / "ov"), threads=1)
    probs, features = plain.predict_with_features(images)
    assert not plain.has_features and features is None
    np.testing.assert_allclose(probs, reference_probabilities(tiny.model, images), atol=1e-5)


def test_large_batches_are_split_and_concurrent_callers_are_safe(tiny):
    images, _ = colour_images(40, seed=52)
    expected = OpenVINOClassifier(tiny.openvino, threads=2, hint="latency").predict_arrays(images)
    throughput = OpenVINOClassifier(tiny.openvino, threads=2, hint="throughput", max_batch=8)
    assert throughput.n_requests >= 1 and throughput.streams >= 1
    np.testing.assert_allclose(throughput.predict_arrays(images), expected, atol=1e-6)
    litert = LiteRTClassifier(tiny.litert, threads=1, max_batch=16)
    np.testing.assert_allclose(litert.predict_arrays(images), expected, atol=1e-5)

    for runtime in (throughput, litert):
        results: dict[int, np.ndarray] = {}

        def work(index: int, runtime=runtime, results=results) -> None:
            sizes = (1, 5, 12, 40)
            results[index] = runtime.predict_arrays(images[: sizes[index % 4]])

        workers = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        for probs in results.values():
            np.testing.assert_allclose(probs, expected[: len(probs)], atol=1e-5)
        assert len(results) == 8


def test_a_batch_is_dealt_out_to_the_infer_requests_in_pieces(tiny):
    """THROUGHPUT runs a batch as pieces of ``request_batch`` images over every free infer request;
    the answers come back in the batch's order whatever the piece size, with or without the even split."""
    images, _ = colour_images(23, seed=53)
    expected = OpenVINOClassifier(tiny.openvino, threads=2, hint="latency").predict_with_features(images)
    for request_batch in (1, 2, 3, None):
        runtime = OpenVINOClassifier(tiny.openvino, threads=2, hint="throughput", request_batch=request_batch)
        probs, features = runtime.predict_with_features(images)
        np.testing.assert_allclose(probs, expected[0], atol=1e-6, err_msg=str(request_batch))
        np.testing.assert_allclose(features, expected[1], atol=1e-5, err_msg=str(request_batch))
        requests = list(runtime._pool.queue)
        assert len(requests) == runtime.n_requests  # all back in the pool
        last = [int(r.get_input_tensor().shape[0]) for r in requests]  # 0: never ran
        limit = request_batch or -(-23 // runtime.n_requests)
        assert max(last) > 0 and all(n <= limit for n in last), (request_batch, last)  # no piece larger
    assert OpenVINOClassifier(tiny.openvino, threads=2, hint="latency").request_batch is None  # runs whole
    with pytest.raises(ValueError, match="request_batch"):
        OpenVINOClassifier(tiny.openvino, threads=2, request_batch=0)


def test_first_calls_from_several_threads_at_once_do_not_deadlock(tiny):
    """Fresh processes whose first calls come from four threads together all finish.

    OpenVINO's bindings set up their NumPy interface on first use, and two threads doing that at once
    deadlock; the classifier's constructor runs one image first. The race is timing-dependent: before
    that warm-up, 2 of 20 such processes hung here, so twelve make a hang likely to show.
    """
    images, _ = colour_images(8, seed=61)
    np.save(tiny.saved_model.parent / "race.npy", images)
    script = textwrap.dedent(
        f"""
        import threading
        import numpy as np
        from fish_platform.ml.runtimes import OpenVINOClassifier
        images = np.load({str(tiny.saved_model.parent / "race.npy")!r})
        runtime = OpenVINOClassifier({str(tiny.openvino)!r}, threads=2, hint="throughput", request_batch=1)
        start = threading.Barrier(4)
        def call():
            start.wait()
            assert runtime.predict_arrays(images).shape == (8, runtime.n_classes)
        threads = [threading.Thread(target=call) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        print("finished")
        """
    )
    hung = 0
    for _ in range(12):
        try:
            result = subprocess.run(
                [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30
            )
        except subprocess.TimeoutExpired:
            hung += 1
            continue
        assert result.stdout.strip().endswith("finished"), result.stderr[-2000:]
    assert hung == 0, f"{hung} of 12 processes hung in their first concurrent OpenVINO calls"


def test_load_runtime_by_suffix(tiny):
    assert runtimes.runtime_for_path("x/model.xml") == "openvino"
    assert runtimes.runtime_for_path("model.tflite") == "litert"
    assert runtimes.runtime_for_path("model.onnx") == "onnx"
    with pytest.raises(ValueError):
        runtimes.runtime_for_path("model.pb")
    assert load_runtime(tiny.onnx, threads=1).name == "onnx"
    assert load_runtime(tiny.openvino, threads=1, hint="latency").hint == "latency"
    with pytest.raises(FileNotFoundError):
        load_runtime(tiny.openvino.with_name("missing.xml"))
    assert set(runtimes.available_runtimes()) == set(runtimes.RUNTIME_NAMES)


def test_openvino_litert_and_onnx_never_import_tensorflow(tiny):
    """In a fresh process: load and run each converted model; TensorFlow and Keras stay out of sys.modules."""
    images, _ = colour_images(6, seed=53)
    np.save(tiny.saved_model.parent / "images.npy", images)
    script = textwrap.dedent(
        f"""
        import json, sys
        import numpy as np
        from fish_platform.ml.runtimes import LiteRTClassifier, OnnxClassifier, OpenVINOClassifier
        images = np.load({str(tiny.saved_model.parent / "images.npy")!r})
        out = {{}}
        for cls, path in ((OpenVINOClassifier, {str(tiny.openvino)!r}),
                          (LiteRTClassifier, {str(tiny.litert)!r}),
                          (OnnxClassifier, {str(tiny.onnx)!r})):
            out[cls.name] = cls(path, threads=1).predict_arrays(images).tolist()
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf2onnx"))
        print(json.dumps({{"probs": out, "loaded": loaded}}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["loaded"] == []
    reference = reference_probabilities(tiny.model, images)
    for name, probs in answer["probs"].items():
        np.testing.assert_allclose(np.array(probs), reference, atol=1e-5, err_msg=name)


def test_openvino_telemetry_is_declined_in_the_processes_that_import_openvino():
    """OpenVINO's converter and NNCF send usage events unless declined; each event forks a sender,
    which on a closed network hangs in DNS and keeps the interpreter from exiting."""
    pytest.importorskip("openvino_telemetry")
    from openvino_telemetry import Telemetry

    from fish_platform.ml.runtimes import import_openvino

    assert hasattr(import_openvino(), "Core")
    telemetry = Telemetry(tid="G-TEST", app_name="fish-test", app_version="0", backend="ga4",
                          enable_opt_in_dialog=False, disable_in_ci=False)  # fmt: skip
    # The same call OpenVINO's converter makes (no consent file: sends by default), re-run on purpose.
    telemetry.init(tid="G-TEST", app_name="fish-test", app_version="0", backend="ga4",
                   enable_opt_in_dialog=False, disable_in_ci=False)  # fmt: skip
    assert telemetry.consent is False
