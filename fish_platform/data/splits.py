"""Deterministic, stratified, stable train/val/test assignment.

An image's split is decided once and recorded in a ledger keyed by content hash (sha256),
so re-runs and newly arrived images never move an existing image to another split. New
images of a species are taken in content-hash order (a fixed pseudo-random order) and each
goes to the split furthest below its target share for that species, which keeps every
species close to the target fractions and puts at least one image in every split as soon
as a species has three.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

SPLITS: tuple[str, ...] = ("train", "val", "test")
DEFAULT_FRACTIONS: Mapping[str, float] = {"train": 0.8, "val": 0.1, "test": 0.1}


def validate_fractions(fractions: Mapping[str, float]) -> dict[str, float]:
    if set(fractions) != set(SPLITS):
        raise ValueError(f"split fractions must name exactly {SPLITS}, got {sorted(fractions)}")
    if any(value <= 0 for value in fractions.values()):
        raise ValueError(f"every split fraction must be positive, got {dict(fractions)}")
    total = sum(fractions.values())
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"split fractions must sum to 1, got {total}")
    return {name: float(fractions[name]) for name in SPLITS}


def assign_splits(
    images: Iterable[tuple[str, str]],
    ledger: Mapping[str, str] | None = None,
    fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
) -> dict[str, str]:
    """Return ``{sha256: split}`` for ``images`` given as ``(sha256, species)`` pairs.

    Images already in ``ledger`` keep their split; the rest are assigned as described in the
    module docstring. The result covers exactly the given images.
    """
    fractions = validate_fractions(fractions)
    ledger = ledger or {}
    by_species: dict[str, set[str]] = defaultdict(set)
    for sha, species in images:
        by_species[species].add(sha)

    result: dict[str, str] = {}
    for species in sorted(by_species):
        hashes = by_species[species]
        counts = {name: 0 for name in SPLITS}
        new: list[str] = []
        for sha in hashes:
            split = ledger.get(sha)
            if split in counts:
                counts[split] += 1
                result[sha] = split
            else:
                new.append(sha)
        total = len(hashes)
        for sha in sorted(new):
            split = _neediest_split(counts, fractions, total)
            counts[split] += 1
            result[sha] = split
    return result


def _neediest_split(counts: Mapping[str, int], fractions: Mapping[str, float], total: int) -> str:
    """The split furthest below its share; an empty split first once a species can fill all three."""
    assigned = sum(counts.values()) + 1

    def priority(name: str) -> tuple[bool, float, int]:
        empty_first = counts[name] == 0 and total >= len(SPLITS)
        return (empty_first, fractions[name] * assigned - counts[name], -SPLITS.index(name))

    return max(SPLITS, key=priority)
