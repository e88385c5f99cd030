"""The raw-image manifest: one row per image file with its content hash.

Hashing reads every byte, so hashes from the previous manifest are reused for files whose
uri, size and modification time are unchanged.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fish_platform.data.store import ImageStore
from fish_platform.imaging import sha256_hex

MANIFEST_COLUMNS = ["uri", "key", "species", "sha256", "bytes", "modified"]


@dataclass(frozen=True)
class ManifestSummary:
    path: Path
    images: int
    species_counts: dict[str, int]
    rehashed: int
    total_bytes: int


def _previous_hashes(path: Path) -> dict[tuple[str, int, float], str]:
    if not path.exists():
        return {}
    old = pd.read_parquet(path, columns=["uri", "bytes", "modified", "sha256"])
    return {(r.uri, int(r.bytes), float(r.modified)): r.sha256 for r in old.itertuples(index=False)}


def build_manifest(
    store: ImageStore,
    path: Path,
    progress: Callable[[int], None] | None = None,
) -> ManifestSummary:
    """List ``store``, hash new or changed files and write the manifest Parquet to ``path``."""
    known = _previous_hashes(path)
    rows = []
    rehashed = 0
    for image in store.list_images():
        digest = known.get((image.uri, image.size, image.modified))
        if digest is None:
            digest = sha256_hex(store.read_bytes(image.uri))
            rehashed += 1
        rows.append((image.uri, image.key, image.species, digest, image.size, image.modified))
        if progress is not None:
            progress(len(rows))
    if not rows:
        raise ValueError(f"no images found under {store.uri}: expected one folder per species")
    frame = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)
    return ManifestSummary(
        path=path,
        images=len(frame),
        species_counts=dict(sorted(Counter(frame["species"]).items())),
        rehashed=rehashed,
        total_bytes=int(frame["bytes"].sum()),
    )


def read_manifest(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path)
