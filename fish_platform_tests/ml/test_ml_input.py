"""The streamed tf.data pipeline over the Parquet dataset."""

from __future__ import annotations

import numpy as np
import pytest

from fish_platform.imaging import to_model_input
from fish_platform.ml.input import (
    class_weights,
    count_rows,
    decoded_bytes,
    iter_rows,
    label_counts,
    make_dataset,
    read_dataset_info,
    split_files,
    split_fingerprint,
)

pytestmark = pytest.mark.timeout(60)


def test_shapes_labels_and_pixels(tiny_dataset):
    info = read_dataset_info(tiny_dataset)
    assert info.n_classes == 4 and info.image_size == 32
    assert len(split_files(tiny_dataset, "test")) == 2
    expected = list(iter_rows(tiny_dataset, "test", ["image", "label", "sha256"]))
    batches = list(make_dataset(tiny_dataset, "test", 32, batch_size=5, with_ids=True))
    assert sum(len(b[1]) for b in batches) == len(expected) == count_rows(tiny_dataset, "test")
    images, labels, ids = batches[0]
    assert images.shape == (5, 32, 32, 3) and images.dtype.name == "float32"
    assert labels.dtype.name == "int32"
    # Unshuffled evaluation order is the file order, and pixels equal the serving path's decoding.
    first = expected[0]
    assert ids[0].numpy().decode() == first["sha256"] and int(labels[0]) == first["label"]
    np.testing.assert_array_equal(images[0].numpy().astype(np.uint8), to_model_input(first["image"], 32))


def test_training_pipeline_shuffles_augments_and_keeps_all_rows(tiny_dataset):
    dataset = make_dataset(tiny_dataset, "train", 32, batch_size=8, training=True, augment=True, seed=3)
    epoch1 = np.concatenate([labels.numpy() for _, labels in dataset])
    epoch2 = np.concatenate([labels.numpy() for _, labels in dataset])
    counts = label_counts(tiny_dataset, "train", 4)
    assert np.array_equal(np.bincount(epoch1, minlength=4), counts)
    assert not np.array_equal(epoch1, epoch2)  # reshuffled every epoch
    images, _ = next(iter(dataset))
    assert images.shape[1:] == (32, 32, 3)
    assert float(images.numpy().min()) >= 0.0 and float(images.numpy().max()) <= 255.0
    assert dataset.cardinality().numpy() == -(-counts.sum() // 8)


def test_wrong_image_size_is_an_error(tiny_dataset):
    import tensorflow as tf

    with pytest.raises(tf.errors.InvalidArgumentError):
        next(iter(make_dataset(tiny_dataset, "val", 64, batch_size=4)))


def test_class_weights_and_fingerprint(tiny_dataset):
    weights = class_weights(np.array([10, 30, 0, 20]))
    assert weights[2] == 0.0 and weights[0] == pytest.approx(2.0) and weights[1] == pytest.approx(2 / 3)
    assert split_fingerprint(tiny_dataset, "test") == split_fingerprint(tiny_dataset, "test")
    assert split_fingerprint(tiny_dataset, "test") != split_fingerprint(tiny_dataset, "val")


def _epoch(dataset) -> tuple[np.ndarray, np.ndarray, list[str]]:
    images, labels, ids = [], [], []
    for batch_images, batch_labels, batch_ids in dataset:
        images.append(batch_images.numpy())
        labels.append(batch_labels.numpy())
        ids.extend(i.decode() for i in batch_ids.numpy())
    return np.concatenate(images), np.concatenate(labels), ids


def test_cached_pipeline_gives_the_same_batches_as_streaming(tiny_dataset):
    fits = decoded_bytes(count_rows(tiny_dataset, "val"), 32)
    streamed = make_dataset(tiny_dataset, "val", 32, batch_size=6, with_ids=True)
    cached = make_dataset(tiny_dataset, "val", 32, batch_size=6, with_ids=True, cache_bytes=fits)
    expected = _epoch(streamed)
    for _ in range(2):  # the first epoch fills the cache, the second reads it
        images, labels, ids = _epoch(cached)
        assert images.dtype == np.float32 and ids == expected[2]
        np.testing.assert_array_equal(labels, expected[1])
        np.testing.assert_array_equal(images, expected[0])
    assert cached.cardinality().numpy() == streamed.cardinality().numpy()


def test_cached_training_pipeline_reshuffles_the_same_images(tiny_dataset):
    streamed = _epoch(make_dataset(tiny_dataset, "train", 32, batch_size=8, with_ids=True))
    pixels = {sha: image for image, sha in zip(streamed[0], streamed[2], strict=True)}
    cached = make_dataset(
        tiny_dataset, "train", 32, batch_size=8, training=True, with_ids=True, cache_bytes=1 << 30
    )
    orders = []
    for _ in range(2):
        images, labels, ids = _epoch(cached)
        assert sorted(ids) == sorted(pixels)  # every image once per epoch
        for image, sha in zip(images, ids, strict=True):
            np.testing.assert_array_equal(image, pixels[sha])  # pixels as streamed, unaugmented
        assert np.array_equal(np.bincount(labels, minlength=4), label_counts(tiny_dataset, "train", 4))
        orders.append(ids)
    assert orders[0] != orders[1]  # reshuffled every epoch


@pytest.mark.parametrize("cache_bytes", [0, 2**30], ids=["streamed", "cached"])
def test_pipelines_run_without_the_autotune_thread(tiny_dataset, cache_bytes):
    # Keras makes an iterator per epoch and per validation pass; destroying one waits out the
    # autotune thread's sleep, so neither pipeline may start that thread.
    for training in (True, False):
        dataset = make_dataset(tiny_dataset, "train", 32, 8, training=training, cache_bytes=cache_bytes)
        assert dataset.options().autotune.enabled is False
        images, labels = next(iter(dataset))
        assert images.shape[1:] == (32, 32, 3) and labels.shape[0] > 0
