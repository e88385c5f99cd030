"""The raw source on S3, against an S3-compatible server on loopback (moto in server mode)."""

import io

import boto3
import dagster as dg
import pytest

from fish_platform.assets.data import DATA_ASSETS, DATA_CHECKS
from fish_platform.data.store import open_store
from fish_platform_tests.helpers import COLORS, dagster_resources, write_image


@pytest.fixture
def bucket(s3_endpoint, tmp_path):
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    name = f"fish-{tmp_path.name.lower().replace('_', '-')}"[:60]
    client.create_bucket(Bucket=name)
    for s_index, (species, color) in enumerate(COLORS.items()):
        for i in range(8):
            local = write_image(tmp_path / "src" / f"{species}{i}.png", color, seed=10 * s_index + i)
            key = f"incoming/Fish_Dataset/{species}/{species}/{i:03d}.png"
            client.upload_file(str(local), name, key)
            client.upload_file(str(local), name, f"incoming/Fish_Dataset/{species}/{species} GT/{i:03d}.png")
    client.put_object(Bucket=name, Key="incoming/Fish_Dataset/Trout/Trout/broken.png", Body=b"\x89PNG broken")
    client.put_object(Bucket=name, Key="elsewhere/Trout/x.png", Body=io.BytesIO(b"outside the prefix"))
    return name


def test_store_lists_only_images_under_the_prefix(s3_endpoint, bucket):
    store = open_store(f"s3://{bucket}/incoming", s3_endpoint)
    images = list(store.list_images())
    assert len(images) == 33  # 4 species x 8 + the broken file; masks and other prefixes skipped
    assert {i.species for i in images} == set(COLORS)
    assert all(i.uri.startswith(f"s3://{bucket}/incoming/") for i in images)
    assert store.read_bytes(images[0].uri)[:4] == b"\x89PNG"


def test_raw_and_dataset_assets_read_from_s3(spark, s3_endpoint, bucket, data_dir):
    resources = dagster_resources(f"s3://{bucket}/incoming", data_dir, s3_endpoint_url=s3_endpoint)
    result = dg.materialize(
        DATA_ASSETS, resources=resources, run_config={"ops": {"fish_dataset": {"config": {"image_size": 32}}}}
    )
    assert result.success
    md = result.asset_materializations_for_node("fish_dataset")[0].metadata
    assert md["rows"].value == 32 and md["quarantined"].value == 1
    rows = result.output_for_node("fish_dataset").version.read_all()
    assert rows["uri"].str.startswith(f"s3://{bucket}/").all()


def test_durable_state_on_s3_leaves_the_local_data_dir_empty(spark, s3_endpoint, bucket, data_dir):
    """FISH_DATA_URI on S3: manifest, processed cache, dataset version and Dagster IO all land there."""
    from fish_platform.data.layout import PlatformLayout
    from fish_platform.resources import io_manager_for

    data_uri = f"s3://{bucket}/platform"
    resources = dagster_resources(
        f"s3://{bucket}/incoming", data_dir, s3_endpoint_url=s3_endpoint, data_uri=data_uri
    )
    resources["io_manager"] = io_manager_for(data_uri, s3_endpoint)
    result = dg.materialize(
        [*DATA_ASSETS, *DATA_CHECKS],
        resources=resources,
        run_config={"ops": {"fish_dataset": {"config": {"image_size": 32}}}},
    )
    assert result.success
    assert list(data_dir.iterdir()) == []  # scratch untouched: nothing durable went to local disk
    layout = PlatformLayout(data_uri, s3_endpoint)
    current = layout.current_version()
    assert current is not None and current.uri.startswith(f"{data_uri}/dataset/versions/")
    assert len(current.read_all()) == 32 and len(current.quarantine()) == 1
    keys = boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(Bucket=bucket, Prefix="platform/")
    names = [obj["Key"] for obj in keys["Contents"]]
    assert "platform/manifests/raw_manifest.parquet" in names
    assert any(name.startswith("platform/processed/size=32/part-") for name in names)
    assert any(name.startswith("platform/dagster-io/fish_dataset") for name in names)
