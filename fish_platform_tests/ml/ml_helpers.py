"""Helpers for the ML tests (import as ``fish_platform_tests.ml.ml_helpers``).

Datasets are written straight to Parquet in the layout the Spark job produces
(``images/split=<name>/part-*.parquet`` + ``labels.json``), so these tests need no Spark or Java.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from fish_platform.imaging import decode_image, encode_png, resize_square, sha256_hex

SPLIT_FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}


def write_parquet_dataset(
    out_dir: Path, images: dict[str, list[bytes]], image_size: int, seed: int = 0
) -> Path:
    """Encoded images per species -> the dataset layout of docs/architecture.md."""
    labels = sorted(images)
    rng = np.random.default_rng(seed)
    rows: dict[str, list[dict]] = {split: [] for split in SPLIT_FRACTIONS}
    counts = {split: dict.fromkeys(labels, 0) for split in SPLIT_FRACTIONS}
    for label, species in enumerate(labels):
        items = list(images[species])
        order = rng.permutation(len(items))
        n_train = int(round(len(items) * SPLIT_FRACTIONS["train"]))
        n_val = int(round(len(items) * SPLIT_FRACTIONS["val"]))
        for rank, index in enumerate(order):
            split = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
            data = items[index]
            original = decode_image(data)
            rows[split].append(
                {
                    "sha256": sha256_hex(data),
                    "species": species,
                    "label": label,
                    "image": encode_png(resize_square(original, image_size)),
                    "uri": f"mem://{species}/{index}",
                    "orig_width": original.width,
                    "orig_height": original.height,
                }
            )
            counts[split][species] += 1
    schema = pa.schema(
        [
            ("sha256", pa.string()),
            ("species", pa.string()),
            ("label", pa.int32()),
            ("image", pa.binary()),
            ("uri", pa.string()),
            ("orig_width", pa.int32()),
            ("orig_height", pa.int32()),
        ]
    )
    for split, split_rows in rows.items():
        folder = out_dir / "images" / f"split={split}"
        folder.mkdir(parents=True, exist_ok=True)
        shuffled = [split_rows[i] for i in rng.permutation(len(split_rows))]
        # Two files with small row groups, like a Spark job's output.
        half = len(shuffled) // 2
        for part, chunk in enumerate((shuffled[:half], shuffled[half:])):
            table = pa.Table.from_pylist(chunk, schema=schema)
            pq.write_table(table, folder / f"part-{part:05d}.parquet", row_group_size=16)
    (out_dir / "labels.json").write_text(
        json.dumps({"labels": labels, "image_size": image_size, "split_counts": counts}, indent=2)
    )
    return out_dir


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
