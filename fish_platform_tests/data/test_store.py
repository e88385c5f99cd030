import pytest

from fish_platform.data.store import LocalImageStore, open_store, species_for
from fish_platform_tests.helpers import write_image


@pytest.mark.parametrize(
    "key,species",
    [
        ("Trout/001.png", "Trout"),
        ("Fish_Dataset/Fish_Dataset/Trout/Trout/001.png", "Trout"),
        ("Fish_Dataset/Fish_Dataset/Trout/Trout GT/001.png", None),
        ("Trout/001.JPG", "Trout"),
        ("README.txt", None),
        ("top.png", None),
        ("Trout/notes.txt", None),
        ("Trout/.hidden.png", None),
    ],
)
def test_species_comes_from_the_folder_holding_the_image(key, species):
    assert species_for(key) == species


def test_local_store_lists_nested_layout_and_reads_bytes(tmp_path):
    write_image(tmp_path / "Fish_Dataset" / "Trout" / "Trout" / "a.png", (1, 2, 3))
    write_image(tmp_path / "Fish_Dataset" / "Trout" / "Trout GT" / "a.png", (1, 2, 3))
    write_image(tmp_path / "Shrimp" / "b.jpg", (9, 9, 9))
    store = LocalImageStore(tmp_path)
    images = sorted(store.list_images(), key=lambda i: i.key)
    assert [(i.key, i.species) for i in images] == [
        ("Fish_Dataset/Trout/Trout/a.png", "Trout"),
        ("Shrimp/b.jpg", "Shrimp"),
    ]
    assert store.read_bytes(images[0].uri)[:8] == b"\x89PNG\r\n\x1a\n"
    assert images[0].size == (tmp_path / images[0].key).stat().st_size


def test_missing_folder_and_unknown_scheme_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="FISH_RAW_URI"):
        list(open_store(str(tmp_path / "nope")).list_images())
    with pytest.raises(ValueError, match="s3://"):
        open_store("gs://bucket/x")
