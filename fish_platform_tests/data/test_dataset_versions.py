"""Dataset versions: incremental decoding, immutability, crash safety, retention, concurrent writers.

Real Spark (local session), real files; the layout is the one every reader uses.
"""

import threading

import pandas as pd
import pytest

from fish_platform.data import dataset as dataset_module
from fish_platform.data.dataset import DatasetConfig, build_dataset
from fish_platform.data.layout import ConcurrentDatasetWrite, DatasetVersion, PlatformLayout
from fish_platform.data.manifest import build_manifest, read_manifest
from fish_platform.data.store import LocalImageStore
from fish_platform_tests.helpers import write_image

CONFIG = DatasetConfig(image_size=24, retention=10)


def _build(spark, raw, layout, config=CONFIG, run_id="run"):
    build_manifest(LocalImageStore(raw), layout.storage, layout.manifest_uri)
    manifest = read_manifest(layout.storage, layout.manifest_uri)
    return build_dataset(spark, manifest, str(raw), layout, config, run_id=run_id)


def _add_images(raw, count, seed):
    for i in range(count):
        write_image(raw / "Trout" / f"extra-{seed}-{i}.png", (40, 180, 60), seed=seed * 1000 + i)


def _state(version: DatasetVersion):
    """Everything a reader of the version sees: rows by hash, ledger, labels."""
    rows = version.read_all(["sha256", "split", "label"]).sort_values("sha256").reset_index(drop=True)
    return rows, version.read_ledger().sort_values("sha256").reset_index(drop=True), version.labels()


def test_second_run_decodes_only_new_images_and_keeps_old_splits(spark, colour_images, tmp_path):
    layout = PlatformLayout(str(tmp_path / "data"))
    first = _build(spark, colour_images, layout, run_id="first")
    assert (first.decoded, first.reused, first.rows) == (48, 0, 48)

    _add_images(colour_images, 5, seed=1)
    second = _build(spark, colour_images, layout, run_id="second")
    assert (second.decoded, second.reused, second.rows) == (5, 48, 53)
    assert second.base_version == first.version.version_id
    assert second.version.uri != first.version.uri  # a new immutable version
    assert layout.current_version() == second.version

    before = dict(zip(*[first.version.read_all()[c] for c in ("sha256", "split")], strict=True))
    after = dict(zip(*[second.version.read_all()[c] for c in ("sha256", "split")], strict=True))
    assert all(after[sha] == split for sha, split in before.items())
    # The earlier version is still complete and readable, unchanged.
    assert len(first.version.read_all()) == 48 and first.version.is_complete()

    # The same images again: nothing to decode, same assignment.
    third = _build(spark, colour_images, layout, run_id="third")
    assert third.decoded == 0 and third.reused == 53
    again = dict(zip(*[third.version.read_all()[c] for c in ("sha256", "split")], strict=True))
    assert again == after


def test_reused_rows_carry_the_same_pixels_as_a_fresh_decode(spark, colour_images, tmp_path):
    incremental = PlatformLayout(str(tmp_path / "incremental"))
    _build(spark, colour_images, incremental, run_id="a")
    _add_images(colour_images, 3, seed=2)
    reused = _build(spark, colour_images, incremental, run_id="b")
    fresh = _build(spark, colour_images, PlatformLayout(str(tmp_path / "fresh")), run_id="c")
    by_hash = lambda v: dict(zip(*[v.read_all()[c] for c in ("sha256", "image")], strict=True))  # noqa: E731
    assert by_hash(reused.version) == by_hash(fresh.version)


STEPS = [
    ("decode_new_images", dataset_module),
    ("assemble_version", dataset_module),
    ("write_version_files", dataset_module),
    ("write_marker", DatasetVersion),
    ("commit", PlatformLayout),
]


@pytest.mark.parametrize("step, owner", STEPS, ids=[name for name, _ in STEPS])
def test_a_crash_at_any_step_leaves_the_last_good_version_in_use(
    spark, colour_images, tmp_path, monkeypatch, step, owner
):
    layout = PlatformLayout(str(tmp_path / "data"))
    good = _build(spark, colour_images, layout, run_id="good")
    expected = _state(good.version)
    _add_images(colour_images, 6, seed=3)

    def crash(*args, **kwargs):
        raise RuntimeError(f"simulated crash in {step}")

    monkeypatch.setattr(owner, step, crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _build(spark, colour_images, layout, run_id="crashed")
    monkeypatch.undo()

    current = layout.current_version()
    assert current == good.version
    rows, ledger, labels = _state(current)
    pd.testing.assert_frame_equal(rows, expected[0])
    pd.testing.assert_frame_equal(ledger, expected[1])
    assert labels == expected[2]

    # The next run recovers: it builds on the good version and includes the new images.
    recovered = _build(spark, colour_images, layout, run_id="next")
    assert recovered.base_version == good.version.version_id and recovered.rows == 54


def test_old_versions_are_pruned_beyond_the_retention(spark, colour_images, tmp_path):
    layout = PlatformLayout(str(tmp_path / "data"))
    config = DatasetConfig(image_size=24, retention=2)
    built = []
    for run in range(4):
        _add_images(colour_images, 1, seed=10 + run)
        built.append(_build(spark, colour_images, layout, config, run_id=f"run{run}"))
    assert layout.version_ids() == [built[2].version.version_id, built[3].version.version_id]
    assert built[3].pruned == [built[1].version.version_id]
    assert layout.current_version() == built[3].version


def test_an_overlapping_writer_fails_loudly_and_corrupts_nothing(spark, colour_images, tmp_path, monkeypatch):
    """Run A builds on version 1; run B commits version 2 meanwhile; A must not replace B's version."""
    layout = PlatformLayout(str(tmp_path / "data"))
    base = _build(spark, colour_images, layout, run_id="base")
    paused, resume = threading.Event(), threading.Event()
    real_write = dataset_module.write_version_files
    holder = threading.local()

    def slow_write(*args, **kwargs):
        if getattr(holder, "pause", False):
            paused.set()
            assert resume.wait(120)
        return real_write(*args, **kwargs)

    monkeypatch.setattr(dataset_module, "write_version_files", slow_write)
    outcome: dict[str, object] = {}

    def run_a():
        holder.pause = True
        try:
            outcome["a"] = _build(spark, colour_images, layout, run_id="overlapA")
        except Exception as exc:  # noqa: BLE001 - the failure is what the test inspects
            outcome["a"] = exc

    thread = threading.Thread(target=run_a)
    thread.start()
    assert paused.wait(120)
    _add_images(colour_images, 2, seed=20)
    b = _build(spark, colour_images, layout, run_id="overlapB")
    resume.set()
    thread.join(180)

    assert isinstance(outcome["a"], ConcurrentDatasetWrite), outcome["a"]
    assert layout.current_version() == b.version
    assert b.base_version == base.version.version_id and b.rows == 50
    assert len(layout.current_version().read_all()) == 50
