"""Model building: variants, weights choices (never a silent fallback), phases, config."""

from __future__ import annotations

import numpy as np
import pytest

from fish_platform.ml.config import TrainConfig
from fish_platform.ml.model import (
    WeightsUnavailable,
    base_of,
    build_model,
    freeze_base,
    normalize_variant,
    official_weights_filename,
    resolve_weights,
    unfreeze_top,
)
from fish_platform.ml.train import optimizer, plan_epochs, training_model
from fish_platform.settings import PROFILE_DEFAULTS

pytestmark = pytest.mark.timeout(90)


@pytest.mark.parametrize(
    ("choice", "variant", "keras_arg"),
    [("none", "B0", None), ("imagenet", "b4", "imagenet")],
    ids=["none", "imagenet"],
)
def test_weights_choices(choice, variant, keras_arg):
    assert resolve_weights(choice, variant).keras_arg == keras_arg


def test_weights_from_a_missing_file_are_unavailable(tmp_path):
    with pytest.raises(WeightsUnavailable, match="does not exist"):
        resolve_weights(str(tmp_path / "missing.weights.h5"), "B0")


def test_weights_from_a_file_are_described_by_its_path(tmp_path):
    other = tmp_path / "mine.weights.h5"
    other.write_bytes(b"x")
    assert resolve_weights(str(other), "B0").description == f"file:{other}"


def test_official_weights_filename():
    assert official_weights_filename("b4") == "efficientnetb4_notop.h5"


def test_variant_names_are_normalized():
    assert normalize_variant("EfficientNetB7") == "B7"


def test_unknown_variant_is_an_error():
    with pytest.raises(ValueError, match="unknown EfficientNet variant"):
        normalize_variant("B9")


def test_scratch_model_and_weights_from_a_file(tmp_path):
    import keras

    model, weights = build_model(3, 32, "B0", "none")
    assert weights.description == "none" and not weights.pretrained
    assert model.output_shape == (None, 3)
    norms = [layer for layer in base_of(model).layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert {layer.momentum for layer in norms} == {0.9}  # from-scratch remedy (docs/training.md)

    path = tmp_path / "base.weights.h5"
    base_of(model).save_weights(path)
    loaded, used = build_model(3, 32, "B0", str(path))
    assert used.pretrained and used.description == f"file:{path}"
    np.testing.assert_array_equal(base_of(loaded).weights[0].numpy(), base_of(model).weights[0].numpy())

    freeze_base(loaded)
    assert all(not w.trainable for w in base_of(loaded).weights)
    trainable = unfreeze_top(loaded, 20)
    assert 0 < trainable <= 20
    layers = base_of(loaded).layers
    assert not any(layer.trainable for layer in layers if isinstance(layer, keras.layers.BatchNormalization))
    with pytest.raises(WeightsUnavailable), pytest.warns(UserWarning):
        build_model(3, 32, "B1", str(path))  # weights of another architecture are an error


def test_config_defaults_come_from_the_profile():
    demo, defaults = TrainConfig.from_profile("demo"), PROFILE_DEFAULTS["demo"]
    assert (demo.variant, demo.weights) == ("B0", "none")  # small and offline: no ImageNet download
    assert (demo.image_size, demo.batch_size, demo.lr_head, demo.patience) == (
        defaults.image_size,
        defaults.batch_size,
        defaults.lr_head,
        defaults.patience,
    )
    production = TrainConfig.from_profile("production", epochs_head=None, seed=5)
    assert (production.variant, production.image_size, production.weights) == ("B4", 380, "imagenet")
    assert production.seed == 5 and production.epochs_head == 10 and production.lr_head == 1e-3
    with pytest.raises(ValueError):
        TrainConfig.from_profile("demo", epochs_head=0, epochs_finetune=0).validate()


@pytest.mark.parametrize(
    ("train_images", "epochs", "min_steps", "expected"),
    [
        # 4 species x 24 images at batch 16: 6 steps an epoch; 600 steps need 100 epochs, scaled 12:4.
        (96, (12, 4), 600, (6, 75, 25, 100)),
        # 1,548 real photos: 97 steps an epoch reach 600 in 7 epochs; the 12+4 stay, no stop before 7.
        (1548, (12, 4), 600, (97, 12, 4, 7)),
        # 8 images: one step an epoch; the cap (100 epochs) wins over 600 steps.
        (8, (12, 4), 600, (1, 75, 25, 100)),
        (96, (12, 4), 0, (6, 12, 4, 0)),  # no minimum: the configured epochs, early stopping at once
        (96, (10, 0), 120, (6, 20, 0, 20)),  # one phase only
        (96, (150, 0), 10_000, (6, 150, 0, 150)),  # configured epochs above the cap are kept
    ],
)
def test_min_steps_plan(train_images, epochs, min_steps, expected):
    plan = plan_epochs(train_images, 16, *epochs, min_steps=min_steps, max_epochs=100)
    assert (plan.steps_per_epoch, plan.epochs_head, plan.epochs_finetune, plan.min_epochs) == expected
    if plan.epochs > sum(epochs):
        assert plan.epochs == plan.min_epochs  # extended only as far as the minimum needs
    assert plan.min_steps >= min(min_steps, 100 * plan.steps_per_epoch)


def test_min_steps_come_from_the_profile():
    demo = TrainConfig.from_profile("demo")
    assert demo.min_steps == PROFILE_DEFAULTS["demo"].min_steps > 0
    assert TrainConfig.from_profile("production").min_steps == 0  # large datasets: epochs alone decide
    with pytest.raises(ValueError, match="min_steps"):
        TrainConfig.from_profile("demo", min_steps=-1).validate()


def test_augmentation_only_in_training():
    import keras

    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(inputs)))
    plain = training_model(model, augment=False, seed=0)
    assert plain is not model  # model itself is never compiled: its file holds no optimizer
    assert {id(w) for w in model.weights} == {id(w) for w in plain.weights}
    assert "augmentation" not in {layer.name for layer in plain.layers}
    fitted = training_model(model, augment=True, seed=0)
    assert {id(w) for w in model.weights} == {id(w) for w in fitted.weights}  # training it trains model
    assert "augmentation" not in {layer.name for layer in model.layers}  # what is logged never augments
    augment = fitted.get_layer("augmentation")
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    assert not np.allclose(augment(images, training=True), images)
    np.testing.assert_array_equal(augment(images, training=False), images)
    np.testing.assert_allclose(fitted(images, training=False), model(images, training=False), rtol=1e-6)


def _small_classifier(seed: int):
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.BatchNormalization()(x)
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, outputs)


def test_fused_adam_trains_like_keras_adam():
    """The training optimizer is Keras' Adam with one fused kernel per variable: same weights after
    several steps (bias correction included), and the compiled step holds ResourceApplyAdam."""
    import keras
    import tensorflow as tf

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (32, 8, 8, 3)).astype("float32")
    labels = rng.integers(0, 3, 32).astype("int32")
    trained = []
    for make in (lambda: keras.optimizers.Adam(0.01), lambda: optimizer(0.01)):
        model = _small_classifier(seed=3)
        model.compile(optimizer=make(), loss=keras.losses.SparseCategoricalCrossentropy())
        model.fit(images, labels, batch_size=8, epochs=3, shuffle=False, verbose=0)
        model.optimizer.learning_rate.assign(0.001)  # a new learning rate reaches the traced step
        model.fit(images, labels, batch_size=8, epochs=1, shuffle=False, verbose=0)
        trained.append(model)
    keras_adam, fused = trained
    assert int(fused.optimizer.iterations.numpy()) == 16
    start = _small_classifier(seed=3)
    moved = [np.abs(a - b).max() for a, b in zip(fused.get_weights(), start.get_weights(), strict=True)]
    assert max(moved) > 1e-2  # it trained at all
    for a, b in zip(fused.get_weights(), keras_adam.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # One fused kernel per variable in the traced update, none of Keras' per-variable arithmetic.
    variables = [keras.Variable(np.ones((4, 4), "float32")), keras.Variable(np.ones(4, "float32"))]
    fused_adam = optimizer(0.01)
    fused_adam.build(variables)
    step = tf.function(lambda grads: fused_adam.apply(grads, variables))
    graph = step.get_concrete_function([tf.TensorSpec((4, 4)), tf.TensorSpec(4)]).graph
    op_types = [op.type for op in graph.get_operations()]
    assert op_types.count("ResourceApplyAdam") == 2
    assert "Sqrt" not in op_types


def test_trained_model_file_loads_without_the_platform_optimizer(tmp_path):
    """Training compiles the wrapper from training_model, never the classifier: its file holds no
    FusedAdam, so plain keras.saving.load_model (compile included) reads it."""
    import keras

    model = _small_classifier(seed=1)
    fitted = training_model(model, augment=False, seed=0)
    fitted.compile(optimizer=optimizer(0.01), loss=keras.losses.SparseCategoricalCrossentropy())
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 255, (8, 8, 8, 3)).astype("float32")
    fitted.fit(images, rng.integers(0, 3, 8).astype("int32"), epochs=1, verbose=0)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(loaded(images), model(images), rtol=1e-5, atol=1e-6)
