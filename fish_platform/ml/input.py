"""Streaming the Parquet dataset into ``tf.data`` without loading it into memory.

The dataset job writes a version (``images/split=<name>/part-*.parquet`` under ``FISH_DATA_URI``, local
or S3; see :mod:`fish_platform.data.layout`) with PNG bytes already resized to the dataset's
``image_size``. Files are read one record batch at a time with pyarrow and PNGs are decoded in a
parallel ``tf.data`` map ahead of the model (prefetch). A split whose decoded pixels fit in
``cache_bytes`` is decoded once and kept in memory as uint8 (the first epoch fills the cache; later
epochs shuffle the whole cached split); a larger split streams every epoch, shuffled on the small
encoded bytes (file order per epoch plus a bounded shuffle buffer). Training puts augmentation in the
model (:func:`fish_platform.ml.train.training_model`), not here; ``augment`` remains for callers that
want augmented batches from the pipeline itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fish_platform.data.layout import DatasetVersion, as_version

DatasetLike = DatasetVersion | str | Path  # a version handle, or a folder/URI holding one


@dataclass(frozen=True)
class DatasetInfo:
    """What ``labels.json`` says about a dataset version."""

    version: DatasetVersion
    labels: list[str]
    image_size: int

    @property
    def n_classes(self) -> int:
        return len(self.labels)


def read_dataset_info(dataset: DatasetLike) -> DatasetInfo:
    """Read ``labels.json``; the labels' order defines the model's output order."""
    version = as_version(dataset)
    content = version.labels()  # DatasetNotFound names the missing file and what to run
    return DatasetInfo(version, list(content["labels"]), int(content["image_size"]))


def split_files(dataset: DatasetLike, split: str) -> list[str]:
    """The Parquet shards of one split, in a stable order."""
    return as_version(dataset).split_files(split)


def iter_rows(
    dataset: DatasetLike, split: str, columns: list[str], rng: np.random.Generator | None = None
) -> Iterator[dict[str, Any]]:
    """Rows of a split as dicts, one record batch in memory at a time; ``rng`` shuffles the file order."""
    version = as_version(dataset)
    return version.iter_rows(version.split_files(split), columns, rng)


def first_images(dataset: DatasetLike, split: str, count: int) -> list[bytes]:
    """The first ``count`` encoded images of a split, in the split's stable order."""
    rows = iter_rows(dataset, split, ["image"])
    return [row["image"] for _, row in zip(range(count), rows, strict=False)]


def count_rows(dataset: DatasetLike, split: str) -> int:
    """Row count from the Parquet footers."""
    version = as_version(dataset)
    return version.count_rows(version.split_files(split))


def label_counts(dataset: DatasetLike, split: str, n_classes: int) -> np.ndarray:
    """Images per label in a split (reads only the small ``label`` column)."""
    counts = np.zeros(n_classes, dtype=np.int64)
    for row in iter_rows(dataset, split, ["label"]):
        counts[row["label"]] += 1
    return counts


def class_weights(counts: np.ndarray) -> dict[int, float]:
    """Inverse-frequency weights (mean 1 over images) so rare species count as much as common ones."""
    total = counts.sum()
    present = counts > 0
    weights = np.where(present, total / (present.sum() * np.maximum(counts, 1)), 0.0)
    return {i: float(w) for i, w in enumerate(weights)}


def split_fingerprint(dataset: DatasetLike, split: str) -> str:
    """sha256 over the sorted image hashes of a split: the identity of a test set."""
    hashes = sorted(row["sha256"] for row in iter_rows(dataset, split, ["sha256"]))
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


def decoded_bytes(rows: int, image_size: int) -> int:
    """Memory that ``rows`` decoded uint8 RGB images of ``image_size`` pixels a side take."""
    return rows * image_size * image_size * 3


def make_dataset(
    dataset: DatasetLike,
    split: str,
    image_size: int,
    batch_size: int,
    *,
    training: bool = False,
    augment: bool = False,
    seed: int = 0,
    shuffle_buffer: int = 512,
    with_ids: bool = False,
    cache_bytes: int = 0,
) -> Any:
    """A ``tf.data.Dataset`` of ``(float32 images (B, S, S, 3) in [0, 255], int32 labels (B,))``.

    ``training`` shuffles, reshuffled every epoch; ``augment`` adds the augmentation layers as a
    ``tf.data`` map (training itself augments inside the model instead). ``with_ids`` adds the
    images' sha256 as a third element (evaluation). ``cache_bytes``: when the split's decoded pixels
    (:func:`decoded_bytes`) fit in this many bytes, they are decoded once and held in memory, and a
    training split is shuffled whole from there; otherwise (and with the default 0) every epoch
    streams from the Parquet files. Without ``training`` both give the same batches in the split's
    stable order. The dataset knows its length, so Keras shows steps per epoch.
    """
    import tensorflow as tf

    version = as_version(dataset)
    files = version.split_files(split)
    rows = version.count_rows(files)
    columns = ["image", "label", "sha256"] if with_ids else ["image", "label"]
    cached = 0 < decoded_bytes(rows, image_size) <= cache_bytes
    # A cached split is read once in its stable order and shuffled after the cache; a streamed one
    # shuffles its file order every epoch.
    rng = np.random.default_rng(seed) if training and not cached else None

    def generate() -> Iterator[tuple]:
        for row in version.iter_rows(files, columns, rng):
            yield tuple(row[column] for column in columns)

    signature = (tf.TensorSpec((), tf.string), tf.TensorSpec((), tf.int32))
    if with_ids:
        signature += (tf.TensorSpec((), tf.string),)
    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
    if training and not cached:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)

    def decode(data: tf.Tensor, label: tf.Tensor, *rest: tf.Tensor) -> tuple:
        image = tf.io.decode_png(data, channels=3)
        # A PNG of another size means the dataset and the config disagree: fail, never resize silently.
        image = tf.ensure_shape(image, (image_size, image_size, 3))
        return (image, label, *rest)

    dataset = dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=cached or not training)
    if cached:
        dataset = dataset.cache()  # uint8 pixels: a quarter of the float32 size
        if training:
            dataset = dataset.shuffle(rows, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)

    layers = augmentation(seed) if augment else None

    def to_float(images: tf.Tensor, labels: tf.Tensor, *rest: tf.Tensor) -> tuple:
        images = tf.cast(images, tf.float32)  # once per batch, after the (uint8) cache and shuffle
        if layers is not None:
            images = layers(images, training=True)
        return (images, labels, *rest)

    deterministic = not (training and augment)  # only the augmenting map is worth reordering
    dataset = dataset.map(to_float, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    steps = -(-rows // batch_size)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(steps))
    return _without_autotune_thread(dataset.prefetch(tf.data.AUTOTUNE))


def _without_autotune_thread(dataset: Any) -> Any:
    """``dataset`` with tf.data's autotuning model thread turned off.

    Keras makes a new iterator for every training epoch and every validation pass, and destroying an
    iterator waits for that thread to wake up from its optimization period (6-20 s waits were seen
    here), with the whole process idle: measured on 2 cores, 16 idle half-seconds in 5 epochs of the
    demo profile, none without it, and the same losses epoch by epoch. The AUTOTUNE maps then run at
    TensorFlow's default parallelism instead of a tuned one.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)
