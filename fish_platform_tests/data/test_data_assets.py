"""raw_fish_images -> fish_dataset materialized in-process with real Spark."""

import shutil

import dagster as dg
import pytest
from PIL import Image

from fish_platform.assets.data import DATA_ASSETS, DATA_CHECKS
from fish_platform.data.layout import PlatformLayout
from fish_platform.imaging import decode_image
from fish_platform_tests.helpers import dagster_resources, write_image


def _materialize(raw_uri, data_dir, **config):
    run_config = {"ops": {"fish_dataset": {"config": {"image_size": 32, **config}}}}
    return dg.materialize(
        [*DATA_ASSETS, *DATA_CHECKS],
        resources=dagster_resources(raw_uri, data_dir),
        run_config=run_config,
    )


def _current(data_dir):
    return PlatformLayout(str(data_dir)).current_version()


def _all_rows(data_dir):
    return _current(data_dir).read_all()


def _add_bad_files(root):
    good = sorted((root / "Trout").rglob("*.png"))[0]
    (good.parent / "truncated.png").write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    (root / "Shrimp" / "empty.jpg").write_bytes(b"")
    (root / "Sea Bass" / "notes.png").write_bytes(b"this is not an image at all")
    shutil.copy(good, good.parent / "copy-of-first.png")
    shutil.copy(sorted((root / "Shrimp").glob("*.jpg"))[0], root / "Shrimp" / "again.jpg")


def test_corrupt_files_are_quarantined_and_duplicates_dropped(spark, colour_images, data_dir):
    _add_bad_files(colour_images)
    result = _materialize(str(colour_images), data_dir)
    assert result.success

    dataset_md = result.asset_materializations_for_node("fish_dataset")[0].metadata
    assert dataset_md["quarantined"].value == 3
    assert dataset_md["duplicates_dropped"].value == 2
    assert dataset_md["rows"].value == 48
    quarantine = _current(data_dir).quarantine()
    assert {(q["uri"].rsplit("/", 1)[-1], q["reason"]) for q in quarantine} == {
        ("truncated.png", "corrupt"),
        ("empty.jpg", "empty"),
        ("notes.png", "not_an_image"),
    }
    raw_md = result.asset_materializations_for_node("raw_fish_images")[0].metadata
    assert raw_md["images"].value == 53  # everything listed, nothing lost before validation

    rows = _all_rows(data_dir)
    assert len(rows) == 48 and rows["sha256"].is_unique
    assert not rows["uri"].str.contains("copy-of-first|again").any()
    labels = _current(data_dir).labels()
    assert labels["labels"] == sorted(labels["labels"]) and len(labels["labels"]) == 4
    assert (rows["label"] == rows["species"].map(labels["labels"].index)).all()
    image = decode_image(rows["image"].iloc[0])
    assert image.size == (32, 32) and image.mode == "RGB"
    for check in result.get_asset_check_evaluations():
        assert check.passed, check.check_name


def test_grey_palette_and_alpha_images_become_rgb(spark, tmp_path, data_dir):
    root = tmp_path / "raw"
    for i in range(4):
        write_image(root / "Trout" / f"{i}.png", (30, 160, 60), seed=i)
    Image.new("L", (20, 30), 128).save(root / "Trout" / "grey.png")
    Image.new("RGBA", (25, 25), (10, 20, 30, 100)).save(root / "Trout" / "alpha.png")
    Image.new("P", (25, 25), 3).save(root / "Trout" / "palette.gif")
    result = dg.materialize(
        DATA_ASSETS,
        resources=dagster_resources(str(root), data_dir),
        run_config={"ops": {"fish_dataset": {"config": {"image_size": 24}}}},
    )
    assert result.success
    rows = _all_rows(data_dir)
    assert len(rows) == 7
    for blob in rows["image"]:
        image = Image.open(__import__("io").BytesIO(blob))
        assert image.mode == "RGB" and image.size == (24, 24)


def test_old_images_keep_their_split_when_new_ones_arrive(spark, colour_images, data_dir):
    assert _materialize(str(colour_images), data_dir).success
    before = dict(zip(*[_all_rows(data_dir)[c] for c in ("sha256", "split")], strict=True))
    for i in range(12, 30):  # more of every species, plus a brand-new species
        write_image(colour_images / "Trout" / f"new{i}.png", (40, 180, 60), seed=1000 + i)
        write_image(colour_images / "Gilt-Head Bream" / f"{i}.png", (120, 120, 120), seed=2000 + i)
    result = _materialize(str(colour_images), data_dir)
    assert result.success
    after = dict(zip(*[_all_rows(data_dir)[c] for c in ("sha256", "split")], strict=True))
    assert len(after) == len(before) + 36
    assert all(after[sha] == split for sha, split in before.items())
    bream = _all_rows(data_dir).query("species == 'Gilt-Head Bream'")["split"].value_counts()
    assert set(bream.index) == {"train", "val", "test"}

    # A plain re-run changes nothing either.
    assert _materialize(str(colour_images), data_dir).success
    again = dict(zip(*[_all_rows(data_dir)[c] for c in ("sha256", "split")], strict=True))
    assert again == after


def test_checks_fail_when_a_species_is_too_small(spark, colour_images, data_dir):
    for path in sorted((colour_images / "Shrimp").glob("*"))[2:]:
        path.unlink()  # two Shrimp left: they cannot fill val and test
    result = dg.materialize(
        [*DATA_ASSETS, *DATA_CHECKS],
        resources=dagster_resources(str(colour_images), data_dir),
        run_config={"ops": {"fish_dataset": {"config": {"image_size": 32}}}},
        raise_on_error=False,
    )
    failed = {c.check_name for c in result.get_asset_check_evaluations() if not c.passed}
    assert failed == {"every_species_in_every_split", "minimum_images_per_species"}


def test_split_partitions_are_readable_per_split(spark, colour_images, data_dir):
    assert _materialize(str(colour_images), data_dir).success
    sizes = {split: len(_current(data_dir).read_split(split)) for split in ("train", "val", "test")}
    assert sum(sizes.values()) == 48 and sizes["train"] > sizes["val"] > 0 and sizes["test"] > 0


@pytest.mark.parametrize("bad", [{"train_fraction": 0.5}])
def test_bad_split_fractions_fail_clearly(spark, colour_images, data_dir, bad):
    with pytest.raises(Exception, match="sum to 1"):
        _materialize(str(colour_images), data_dir, **bad)
