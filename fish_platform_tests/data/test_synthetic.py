"""The synthetic generator: determinism, layout, broken files, duplicates, and learnable species."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fish_platform.data.store import LocalImageStore
from fish_platform.data.synthetic import SPECIES_STYLES, SyntheticSummary, generate_dataset, species_styles
from fish_platform.imaging import InvalidImage, decode_image

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"


def files_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SyntheticSummary:
    out_dir = tmp_path_factory.mktemp("synthetic") / "raw"
    return generate_dataset(out_dir, species=4, per_species=12, corrupt=8, duplicates=4, seed=7)


def good_images(summary: SyntheticSummary) -> list[Path]:
    broken = set(summary.corrupt) | {copy for copy, _ in summary.duplicates}
    return [p for p in sorted(summary.out_dir.glob("*/*")) if p not in broken]


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path: Path) -> None:
    args = dict(species=3, per_species=4, corrupt=4, duplicates=2)
    first = files_of(generate_dataset(tmp_path / "a", seed=11, **args).out_dir)
    again = files_of(generate_dataset(tmp_path / "b", seed=11, **args).out_dir)
    other = files_of(generate_dataset(tmp_path / "c", seed=12, **args).out_dir)
    assert first == again
    changed = [name for name in first if name.startswith("Trout/fish_") and first[name] != other[name]]
    assert len(changed) == 4  # every good image of a species depends on the seed


def test_layout_counts_and_readme(sample: SyntheticSummary) -> None:
    assert sample.species == [style.name for style in SPECIES_STYLES[:4]]
    assert sample.counts == {name: 12 for name in sample.species}
    assert sample.total_files == 4 * 12 + 8 + 4
    on_disk = [p for p in sample.out_dir.glob("*/*") if p.is_file()]
    assert len(on_disk) == sample.total_files
    assert {p.parent.name for p in on_disk} == set(sample.species)
    readme = (sample.out_dir / "README.txt").read_text()
    assert "SYNTHETIC" in readme and "not real fish" in readme.lower()
    # the platform's own scanner finds exactly the image files, not the README
    listed = list(LocalImageStore(sample.out_dir).list_images())
    assert len(listed) == sample.total_files
    assert {image.species for image in listed} == set(sample.species)


def test_corrupt_files_fail_to_decode_and_good_ones_decode(sample: SyntheticSummary) -> None:
    assert len(sample.corrupt) == 8
    assert len({p.parent for p in sample.corrupt}) == 4  # spread over all species
    reasons = set()
    for path in sample.corrupt:
        with pytest.raises(InvalidImage) as caught:
            decode_image(path.read_bytes())
        reasons.add(caught.value.reason)
    assert reasons == {"corrupt", "empty", "not_an_image"}
    assert {p.suffix for p in sample.corrupt} == {".png", ".jpg"}
    for path in good_images(sample):
        assert decode_image(path.read_bytes()).mode == "RGB"


def test_duplicates_are_byte_copies_in_the_same_species(sample: SyntheticSummary) -> None:
    assert len(sample.duplicates) == 4
    good = set(good_images(sample))
    for copy, original in sample.duplicates:
        assert copy != original and copy.parent == original.parent
        assert original in good
        assert copy.read_bytes() == original.read_bytes()


def test_png_and_jpeg_both_present_and_match_their_extension(sample: SyntheticSummary) -> None:
    suffixes = set()
    for path in good_images(sample):
        data = path.read_bytes()
        suffixes.add(path.suffix)
        assert data.startswith(PNG_MAGIC if path.suffix == ".png" else JPEG_MAGIC), path
    assert suffixes == {".png", ".jpg"}


def test_sizes_vary_by_default_and_are_fixed_on_request(sample: SyntheticSummary, tmp_path: Path) -> None:
    varied = {Image.open(p).size for p in good_images(sample)}
    assert len({w for w, _ in varied}) > 10 and len({h for _, h in varied}) > 10
    assert all(96 <= w <= 320 for w, _ in varied)
    fixed = generate_dataset(tmp_path, species=2, per_species=3, size=(100, 80))
    assert {Image.open(p).size for p in fixed.out_dir.glob("*/*")} == {(100, 80)}


def test_progress_reports_every_file(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    summary = generate_dataset(
        tmp_path,
        species=2,
        per_species=3,
        corrupt=2,
        duplicates=1,
        size=(64, 48),
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(i, summary.total_files) for i in range(1, summary.total_files + 1)]


def test_more_species_than_named_ones_get_distinct_extras() -> None:
    styles = species_styles(len(SPECIES_STYLES) + 3)
    assert len({s.name for s in styles}) == len(styles)
    assert species_styles(len(SPECIES_STYLES) + 3)[-1] == styles[-1]  # extras do not depend on anything else
    with pytest.raises(ValueError):
        species_styles(0)


def foreground_features(path: Path) -> np.ndarray:
    """Mean colour and a coarse colour histogram of the pixels that differ from their row's edges.

    Backgrounds are vertical gradients shared by all species, so a row's two edge pixels estimate
    the background behind the fish; what differs is (mostly) fish.
    """
    pixels = np.asarray(decode_image(path.read_bytes()), dtype=np.float32)
    background = (pixels[:, :1] + pixels[:, -1:]) / 2
    fish = pixels[np.abs(pixels - background).sum(axis=-1) > 60]
    if len(fish) < 10:
        fish = pixels.reshape(-1, 3)
    bins = (fish // 64).astype(int)
    histogram = np.bincount(bins[:, 0] * 16 + bins[:, 1] * 4 + bins[:, 2], minlength=64) / len(fish)
    return np.concatenate([fish.mean(axis=0) / 255, histogram])


def test_species_are_separable_by_a_trivial_classifier(tmp_path: Path) -> None:
    species, per_species = 5, 24
    summary = generate_dataset(tmp_path, species=species, per_species=per_species, size=(96, 72), seed=3)
    features, labels = [], []
    for label, name in enumerate(summary.species):
        for path in sorted((tmp_path / name).iterdir()):
            features.append(foreground_features(path))
            labels.append(label)
    x, y = np.array(features), np.array(labels)
    train = np.arange(len(y)) % 3 != 0
    centroids = np.stack([x[train & (y == k)].mean(axis=0) for k in range(species)])
    distances = ((x[~train][:, None, :] - centroids[None]) ** 2).sum(axis=-1)
    accuracy = float((distances.argmin(axis=1) == y[~train]).mean())
    assert accuracy >= 0.55, f"nearest-centroid accuracy {accuracy:.2f} (chance is {1 / species:.2f})"
