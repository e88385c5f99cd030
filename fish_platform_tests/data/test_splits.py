import random

import pytest

from fish_platform.data.splits import SPLITS, assign_splits, validate_fractions


def _images(n_per_species: dict[str, int], salt: str = "") -> list[tuple[str, str]]:
    return [(f"{species}-{salt}{i:05d}", species) for species, n in n_per_species.items() for i in range(n)]


def test_split_is_stratified_close_to_fractions():
    images = _images({"a": 100, "b": 40, "c": 10})
    result = assign_splits(images)
    for species, n in {"a": 100, "b": 40, "c": 10}.items():
        counts = {s: sum(1 for sha, sp in images if sp == species and result[sha] == s) for s in SPLITS}
        assert sum(counts.values()) == n
        assert abs(counts["train"] - 0.8 * n) <= 1
        assert abs(counts["val"] - 0.1 * n) <= 1
        assert abs(counts["test"] - 0.1 * n) <= 1


def test_every_split_gets_a_species_with_three_images():
    result = assign_splits(_images({"rare": 3}))
    assert sorted(result.values()) == sorted(SPLITS)


def test_assignment_does_not_depend_on_input_order():
    images = _images({"a": 50, "b": 30})
    shuffled = images[:]
    random.Random(1).shuffle(shuffled)
    assert assign_splits(images) == assign_splits(shuffled)


def test_new_images_never_move_old_ones():
    old = _images({"a": 40, "b": 20})
    ledger = assign_splits(old)
    new = _images({"a": 25, "b": 5, "c": 12}, salt="new")
    result = assign_splits(old + new, ledger)
    assert {sha: result[sha] for sha, _ in old} == ledger
    c_counts = {s: sum(1 for sha, sp in new if sp == "c" and result[sha] == s) for s in SPLITS}
    assert all(c_counts[s] > 0 for s in SPLITS)


def test_ledger_entries_for_absent_images_are_ignored():
    ledger = {"gone": "test"}
    result = assign_splits(_images({"a": 5}), ledger)
    assert "gone" not in result and len(result) == 5


@pytest.mark.parametrize(
    "fractions",
    [
        {"train": 0.8, "val": 0.2},
        {"train": 0.9, "val": 0.1, "test": 0.1},
        {"train": 1.0, "val": 0.0, "test": 0.0},
    ],
)
def test_bad_fractions_are_rejected(fractions):
    with pytest.raises(ValueError):
        validate_fractions(fractions)
