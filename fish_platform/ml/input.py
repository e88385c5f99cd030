"""Streaming the Parquet dataset into ``tf.data`` without loading it into memory.

The dataset job writes ``images/split=<name>/part-*.parquet`` with PNG bytes already resized to
the dataset's ``image_size``. Files are read one record batch at a time with pyarrow; shuffling
happens on the small encoded bytes (file order per epoch plus a bounded shuffle buffer), and PNG
decoding and augmentation run in parallel ``tf.data`` maps ahead of the model (prefetch).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

READ_BATCH_ROWS = 256


@dataclass(frozen=True)
class DatasetInfo:
    """What ``labels.json`` says about a dataset."""

    dataset_dir: Path
    labels: list[str]
    image_size: int

    @property
    def n_classes(self) -> int:
        return len(self.labels)


def read_dataset_info(dataset_dir: str | Path) -> DatasetInfo:
    """Read ``labels.json``; the labels' order defines the model's output order."""
    dataset_dir = Path(dataset_dir)
    path = dataset_dir / "labels.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: build the dataset (fish_dataset) first")
    content = json.loads(path.read_text())
    return DatasetInfo(dataset_dir, list(content["labels"]), int(content["image_size"]))


def split_files(dataset_dir: str | Path, split: str) -> list[Path]:
    """The Parquet files of one split, in a stable order."""
    folder = Path(dataset_dir) / "images" / f"split={split}"
    files = sorted(folder.glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no Parquet files for split {split!r} under {folder}")
    return files


def count_rows(files: list[Path]) -> int:
    """Row count from the Parquet footers (reads no data)."""
    return sum(pq.ParquetFile(path).metadata.num_rows for path in files)


def iter_rows(
    files: list[Path], columns: list[str], rng: np.random.Generator | None = None
) -> Iterator[dict[str, Any]]:
    """Yield rows as dicts, one record batch in memory at a time; ``rng`` shuffles the file order."""
    order = list(files) if rng is None else [files[i] for i in rng.permutation(len(files))]
    for path in order:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=READ_BATCH_ROWS, columns=columns):
            yield from batch.to_pylist()


def label_counts(dataset_dir: str | Path, split: str, n_classes: int) -> np.ndarray:
    """Images per label in a split (reads only the small ``label`` column)."""
    counts = np.zeros(n_classes, dtype=np.int64)
    for row in iter_rows(split_files(dataset_dir, split), ["label"]):
        counts[row["label"]] += 1
    return counts


def class_weights(counts: np.ndarray) -> dict[int, float]:
    """Inverse-frequency weights (mean 1 over images) so rare species count as much as common ones."""
    total = counts.sum()
    present = counts > 0
    weights = np.where(present, total / (present.sum() * np.maximum(counts, 1)), 0.0)
    return {i: float(w) for i, w in enumerate(weights)}


def split_fingerprint(dataset_dir: str | Path, split: str) -> str:
    """sha256 over the sorted image hashes of a split: the identity of a test set."""
    hashes = sorted(row["sha256"] for row in iter_rows(split_files(dataset_dir, split), ["sha256"]))
    return hashlib.sha256("\n".join(hashes).encode()).hexdigest()


def augmentation(seed: int) -> Any:
    """Random flips, small rotations, zoom and contrast, as Keras preprocessing layers.

    Flips are horizontal only (fish swim left or right; upside-down fish are rare in photos).
    """
    import keras

    return keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal", seed=seed),
            keras.layers.RandomRotation(0.05, fill_mode="reflect", seed=seed + 1),
            keras.layers.RandomZoom((-0.1, 0.1), fill_mode="reflect", seed=seed + 2),
            keras.layers.RandomContrast(0.1, seed=seed + 3),
        ],
        name="augmentation",
    )


def make_dataset(
    dataset_dir: str | Path,
    split: str,
    image_size: int,
    batch_size: int,
    *,
    training: bool = False,
    augment: bool = False,
    seed: int = 0,
    shuffle_buffer: int = 512,
    with_ids: bool = False,
) -> Any:
    """A ``tf.data.Dataset`` of ``(float32 images (B, S, S, 3) in [0, 255], int32 labels (B,))``.

    ``training`` shuffles (file order and a buffer, reshuffled every epoch); ``augment`` adds the
    augmentation layers. ``with_ids`` adds the images' sha256 as a third element (evaluation).
    The dataset knows its length, so Keras shows steps per epoch.
    """
    import tensorflow as tf

    files = split_files(dataset_dir, split)
    rows = count_rows(files)
    columns = ["image", "label", "sha256"] if with_ids else ["image", "label"]
    rng = np.random.default_rng(seed)

    def generate() -> Iterator[tuple]:
        for row in iter_rows(files, columns, rng if training else None):
            yield tuple(row[column] for column in columns)

    signature = (tf.TensorSpec((), tf.string), tf.TensorSpec((), tf.int32))
    if with_ids:
        signature += (tf.TensorSpec((), tf.string),)
    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
    if training:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)

    def decode(data: tf.Tensor, label: tf.Tensor, *rest: tf.Tensor) -> tuple:
        image = tf.io.decode_png(data, channels=3)
        # A PNG of another size means the dataset and the config disagree: fail, never resize silently.
        image = tf.ensure_shape(image, (image_size, image_size, 3))
        return (tf.cast(image, tf.float32), label, *rest)

    dataset = dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=not training)
    dataset = dataset.batch(batch_size)
    if augment:
        layers = augmentation(seed)
        dataset = dataset.map(
            lambda images, labels, *rest: (layers(images, training=True), labels, *rest),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    steps = -(-rows // batch_size)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(steps))
    return dataset.prefetch(tf.data.AUTOTUNE)
