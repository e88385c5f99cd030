"""Helpers for the ML tests (import as ``fish_platform_tests.ml.ml_helpers``).

Datasets are written through the dataset layout's own writers (:class:`DatasetVersion`: shards,
ledger, labels, marker), as the Spark job writes them, so these tests need no Spark or Java.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from fish_platform.data.dataset import FishDataset
from fish_platform.data.layout import DatasetVersion
from fish_platform.imaging import decode_image, encode_png, resize_square, sha256_hex

SPLIT_FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}


def write_parquet_dataset(
    out_dir: Path, images: dict[str, list[bytes]], image_size: int, seed: int = 0
) -> DatasetVersion:
    """Encoded images per species -> a complete dataset version at ``out_dir``."""
    labels = sorted(images)
    rng = np.random.default_rng(seed)
    rows: list[dict] = []
    for label, species in enumerate(labels):
        items = list(images[species])
        order = rng.permutation(len(items))
        n_train = int(round(len(items) * SPLIT_FRACTIONS["train"]))
        n_val = int(round(len(items) * SPLIT_FRACTIONS["val"]))
        for rank, index in enumerate(order):
            split = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
            data = items[index]
            original = decode_image(data)
            rows.append(
                {
                    "sha256": sha256_hex(data),
                    "species": species,
                    "label": label,
                    "split": split,
                    "image": encode_png(resize_square(original, image_size)),
                    "uri": f"mem://{species}/{index}",
                    "orig_width": original.width,
                    "orig_height": original.height,
                }
            )
    frame = pd.DataFrame(rows)
    version = DatasetVersion(str(out_dir))
    for split in SPLIT_FRACTIONS:
        part = frame[frame["split"] == split]
        shuffled = part.iloc[rng.permutation(len(part))]
        half = len(shuffled) // 2  # two shards per split, like a Spark job's output
        for index, chunk in enumerate((shuffled.iloc[:half], shuffled.iloc[half:])):
            version.write_shard(split, f"{index:05d}", chunk)
    version.write_ledger(frame)
    counts = {split: dict.fromkeys(labels, 0) for split in SPLIT_FRACTIONS}
    for (split, species), n in frame.groupby(["split", "species"]).size().items():
        counts[split][species] = int(n)
    version.write_labels({"labels": labels, "image_size": image_size, "split_counts": counts})
    version.write_reports([], [])
    version.write_marker({"version": version.version_id, "rows": len(frame)})
    return version


def fish_dataset_for(version: DatasetVersion) -> FishDataset:
    """The ``fish_dataset`` asset's output for a version written by :func:`write_parquet_dataset`."""
    labels = version.labels()
    return FishDataset(
        version=version,
        labels=labels["labels"],
        image_size=labels["image_size"],
        split_counts=labels["split_counts"],
        quarantined=[],
        duplicates=[],
        decoded=0,
        reused=0,
        base_version=None,
        pruned=[],
        duration_s=0.0,
    )


def synthetic_images(species: int, per_species: int, seed: int, root: Path) -> dict[str, list[bytes]]:
    """Procedural fish from the data layer's generator (small files, fixed size for speed)."""
    from fish_platform.data.synthetic import generate_dataset

    summary = generate_dataset(root, species=species, per_species=per_species, size=(96, 64), seed=seed)
    return {
        name: sorted(path.read_bytes() for path in (root / name).iterdir() if path.is_file())
        for name in summary.species
    }


def png_bytes(color: tuple[int, int, int], size: tuple[int, int] = (50, 40), seed: int = 0) -> bytes:
    """A small noisy one-colour PNG (for packaging tests that need any image)."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(color) + rng.normal(0, 20, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    return encode_png(Image.fromarray(pixels))
