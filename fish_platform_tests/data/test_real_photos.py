"""raw -> dataset over the real Fish4Knowledge photos (skipped where the folder is absent)."""

import dagster as dg
import pytest

from fish_platform.assets.data import DATA_ASSETS, DATA_CHECKS
from fish_platform.imaging import sha256_hex
from fish_platform_tests.helpers import dagster_resources

pytestmark = [pytest.mark.realdata, pytest.mark.e2e]


def test_real_photos_are_deduplicated_and_every_species_lands_in_every_split(spark, real_data_dir, data_dir):
    files = [p for p in real_data_dir.rglob("*.png")]
    distinct = {sha256_hex(p.read_bytes()) for p in files}
    assert len(distinct) < len(files), "the real set is known to hold exact duplicates"

    result = dg.materialize(
        [*DATA_ASSETS, *DATA_CHECKS],
        resources=dagster_resources(str(real_data_dir), data_dir),
        run_config={"ops": {"fish_dataset": {"config": {"image_size": 64}}}},
    )
    assert result.success
    md = result.asset_materializations_for_node("fish_dataset")[0].metadata
    assert md["duplicates_dropped"].value == len(files) - len(distinct)
    assert md["quarantined"].value == 0
    rows = result.output_for_node("fish_dataset").version.read_all(["sha256", "species", "split"])
    assert len(rows) == len(distinct) and rows["sha256"].is_unique
    species = {p.parent.name for p in files}
    assert len(species) == 19
    per_split = rows.groupby("split", observed=True)["species"].nunique()
    assert per_split.to_dict() == {"test": 19, "train": 19, "val": 19}
    assert all(check.passed for check in result.get_asset_check_evaluations())
