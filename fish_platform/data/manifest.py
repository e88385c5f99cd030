"""The raw-image manifest: one row per image file with its content hash.

Hashing reads every byte, so hashes from the previous manifest are reused for files whose
uri, size and modification time are unchanged.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from fish_platform.data.storage import Storage, read_parquet, write_parquet
from fish_platform.data.store import ImageStore
from fish_platform.imaging import sha256_hex

MANIFEST_COLUMNS = ["uri", "key", "species", "sha256", "bytes", "modified"]


@dataclass(frozen=True)
class ManifestSummary:
    uri: str
    images: int
    species_counts: dict[str, int]
    rehashed: int
    total_bytes: int


def _previous_hashes(storage: Storage, uri: str) -> dict[tuple[str, int, float], str]:
    if not storage.exists(uri):
        return {}
    old = read_parquet(storage, uri, ["uri", "bytes", "modified", "sha256"])
    return {(r.uri, int(r.bytes), float(r.modified)): r.sha256 for r in old.itertuples(index=False)}


def build_manifest(
    store: ImageStore,
    storage: Storage,
    uri: str,
    progress: Callable[[int], None] | None = None,
) -> ManifestSummary:
    """List ``store``, hash new or changed files and write the manifest Parquet to ``uri``."""
    known = _previous_hashes(storage, uri)
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
    write_parquet(storage, uri, frame, row_group_size=65536)
    return ManifestSummary(
        uri=uri,
        images=len(frame),
        species_counts=dict(sorted(Counter(frame["species"]).items())),
        rehashed=rehashed,
        total_bytes=int(frame["bytes"].sum()),
    )


def read_manifest(storage: Storage, uri: str) -> pd.DataFrame:
    return read_parquet(storage, uri)


def manifest_uris(storage: Storage, uri: str) -> set[str]:
    """The image URIs already in the manifest (empty before the first run)."""
    if not storage.exists(uri):
        return set()
    return set(read_parquet(storage, uri, ["uri"])["uri"])
