"""Two-phase training of the EfficientNet classifier on the streamed dataset.

Phase ``head``: with pretrained weights the base is frozen and only the new head learns; from
scratch (``weights=none``) there is nothing worth freezing, so the whole network learns.
Phase ``finetune``: pretrained bases unfreeze their top ``fine_tune_layers`` layers (BatchNormalization
stays frozen); from scratch the whole network goes on at the lower learning rate.
Each phase stops early when the validation loss stops improving, but not before ``min_steps``
optimizer steps: a small train split gets more epochs so that it reaches them (:func:`plan_epochs`).
The weights of the best epoch over both phases are restored at the end, so the model returned is
never a late, worse one.

Training is fed like a plain Keras loop over arrays: decoded uint8 images are cached in memory when
the split fits (``cache_mb``), and augmentation runs as the first layers of the model that is fitted
(:func:`training_model`), in the same compiled step, not as a separate ``tf.data`` map. The model
returned has no augmentation layers.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fish_platform.ml.config import TrainConfig
from fish_platform.ml.input import (
    DatasetInfo,
    DatasetLike,
    augmentation,
    class_weights,
    count_rows,
    decoded_bytes,
    label_counts,
    make_dataset,
    read_dataset_info,
)
from fish_platform.ml.model import ResolvedWeights, build_model, freeze_base, normalize_variant, unfreeze_top

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpochRecord:
    epoch: int  # 1-based over both phases
    phase: str
    metrics: dict[str, float]  # loss, accuracy, val_loss, val_accuracy, learning_rate
    seconds: float


@dataclass(frozen=True)
class EpochPlan:
    """The epochs each phase may run, and how many must run before early stopping may stop training."""

    steps_per_epoch: int
    epochs_head: int
    epochs_finetune: int
    min_epochs: int  # early stopping watches the validation loss from this many epochs on (0: at once)

    @property
    def epochs(self) -> int:
        return self.epochs_head + self.epochs_finetune

    @property
    def min_steps(self) -> int:
        """Optimizer steps trained before early stopping may end training."""
        return self.min_epochs * self.steps_per_epoch


def plan_epochs(
    train_images: int,
    batch_size: int,
    epochs_head: int,
    epochs_finetune: int,
    min_steps: int = 0,
    max_epochs: int = 100,
) -> EpochPlan:
    """Epochs per phase so that at least ``min_steps`` optimizer steps run, at most ``max_epochs``.

    A large train split reaches ``min_steps`` within the configured epochs: they stay as they are,
    and early stopping only waits until the minimum is done. A small one (96 images at batch 16 are
    6 steps an epoch) gets more epochs, both phases scaled alike, capped at ``max_epochs`` (or the
    configured epochs, if more); it then trains the minimum, and the best epoch is still the one kept.
    """
    steps = max(1, -(-train_images // batch_size))
    planned = epochs_head + epochs_finetune
    needed = -(-min_steps // steps) if min_steps > 0 else 0
    min_epochs = min(needed, max(max_epochs, planned))
    if min_epochs <= planned:
        return EpochPlan(steps, epochs_head, epochs_finetune, min_epochs)
    head = round(min_epochs * epochs_head / planned)
    if epochs_head:
        head = max(1, head)
    if epochs_finetune:
        head = min(head, min_epochs - 1)
    return EpochPlan(steps, head, min_epochs - head, min_epochs)


@dataclass
class TrainResult:
    model: Any
    weights: ResolvedWeights
    info: DatasetInfo
    config: TrainConfig
    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float = float("inf")
    best_val_accuracy: float = 0.0
    duration_s: float = 0.0
    train_images: int = 0
    val_images: int = 0
    plan: EpochPlan | None = None

    @property
    def epochs_run(self) -> int:
        return len(self.history)

    @property
    def train_images_per_s(self) -> float:
        seconds = sum(record.seconds for record in self.history)
        return self.train_images * self.epochs_run / seconds if seconds else 0.0

    def curves(self) -> dict[str, list[float]]:
        """Metric name -> values per epoch (for plots)."""
        names = sorted({name for record in self.history for name in record.metrics})
        return {name: [record.metrics.get(name, float("nan")) for record in self.history] for name in names}


EpochCallback = Callable[[EpochRecord], None]


def _keras_callback_classes() -> Any:
    """``(EpochReporter, KeepBest)``: the Keras callbacks of a training run.

    Defined on first use, so that importing this module does not import Keras.
    """
    import keras

    class EpochReporter(keras.callbacks.Callback):
        """Hands every finished epoch to ``on_epoch`` (Dagster log lines, MLflow metrics)."""

        def __init__(self, phase: str, on_epoch: EpochCallback | None, records: list) -> None:
            super().__init__()
            self.phase, self.on_epoch, self.records = phase, on_epoch, records
            self._started = 0.0

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self._started = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            metrics = {k: float(v) for k, v in (logs or {}).items()}
            metrics["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            record = EpochRecord(epoch + 1, self.phase, metrics, time.perf_counter() - self._started)
            self.records.append(record)
            if self.on_epoch is not None:
                self.on_epoch(record)

    class KeepBest(keras.callbacks.Callback):
        """Remembers the weights of the lowest validation loss across phases (by variable path).

        Keyed by path rather than position because freezing and unfreezing between phases must
        not be able to shuffle which array belongs to which variable.
        """

        def __init__(self) -> None:
            super().__init__()
            self.best_loss = float("inf")
            self.best_accuracy = 0.0
            self.best_epoch = 0
            self.best: dict[str, np.ndarray] | None = None

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            loss = float((logs or {}).get("val_loss", float("inf")))
            if np.isfinite(loss) and loss < self.best_loss:
                self.best_loss, self.best_epoch = loss, epoch + 1
                self.best_accuracy = float((logs or {}).get("val_accuracy", 0.0))
                self.best = {v.path: keras.ops.convert_to_numpy(v) for v in self.model.weights}

        def restore(self, model: Any) -> None:
            if self.best is not None:
                for variable in model.weights:
                    variable.assign(self.best[variable.path])

    return EpochReporter, KeepBest


@functools.cache
def _fused_adam_class() -> Any:
    """``FusedAdam``: Keras' Adam, with each variable's update one TensorFlow kernel.

    Keras' Adam builds its update from about 15 graph ops per variable (the bias-correction scalars
    among them, again for every variable); EfficientNet-B0 has over 200 trainable variables, so the
    compiled train step carries thousands of small ops, and tracing it spends seconds building them.
    ``ResourceApplyAdam`` computes the same update (the same bias correction and epsilon as Keras:
    ``variable -= lr * sqrt(1 - beta_2^t) / (1 - beta_1^t) * m / (sqrt(v) + epsilon)``) in one op.
    The scalars are built once per traced step. Anything the fused kernel does not cover (AMSGrad,
    sparse gradients, another dtype) goes through Keras' own update. Defined on first use, so that
    importing this module does not import Keras.
    """
    import keras
    import tensorflow as tf

    class FusedAdam(keras.optimizers.Adam):
        def _backend_update_step(self, grads: Any, trainable_variables: Any, learning_rate: Any) -> None:
            self._fused_scalars = None  # built by the first update_step of this traced step
            super()._backend_update_step(grads, trainable_variables, learning_rate)

        def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
            if self.amsgrad or isinstance(gradient, tf.IndexedSlices) or variable.dtype != tf.float32:
                super().update_step(gradient, variable, learning_rate)
                return
            if getattr(self, "_fused_scalars", None) is None:
                step = tf.cast(self.iterations + 1, tf.float32)
                beta_1 = tf.constant(self.beta_1, tf.float32)
                beta_2 = tf.constant(self.beta_2, tf.float32)
                self._fused_scalars = {
                    "beta1_power": tf.pow(beta_1, step),
                    "beta2_power": tf.pow(beta_2, step),
                    "lr": tf.cast(learning_rate, tf.float32),
                    "beta1": beta_1,
                    "beta2": beta_2,
                    "epsilon": tf.constant(self.epsilon, tf.float32),
                }
            index = self._get_variable_index(variable)
            tf.raw_ops.ResourceApplyAdam(
                var=variable.handle,
                m=self._momentums[index].value.handle,
                v=self._velocities[index].value.handle,
                grad=tf.cast(gradient, tf.float32),
                **self._fused_scalars,
            )

    return FusedAdam


def optimizer(learning_rate: float) -> Any:
    """The optimizer training compiles with: Adam at ``learning_rate``, fused (:func:`_fused_adam_class`)."""
    return _fused_adam_class()(learning_rate)


def train_classifier(
    config: TrainConfig,
    dataset: DatasetLike,
    *,
    on_epoch: EpochCallback | None = None,
) -> TrainResult:
    """Train on the ``train`` split, early-stop on ``val``; returns the model with its best weights.

    Raises ``ValueError`` if ``config.image_size`` differs from the dataset's, and
    :class:`~fish_platform.ml.model.WeightsUnavailable` if the requested weights cannot be loaded.
    """
    config.validate()
    info = read_dataset_info(dataset)
    _check_image_size(config, info)
    model, weights = _build_seeded_model(config, info)
    counts, val_counts = _train_and_val_label_counts(dataset, info.n_classes)
    result = TrainResult(
        model, weights, info, config, train_images=int(counts.sum()), val_images=int(val_counts.sum())
    )
    result.plan = _plan(config, result.train_images)
    class_weight = class_weights(counts) if config.class_weights else None
    train_data, val_data = _input_pipelines(dataset, config, info.image_size)
    fitted = training_model(model, config.augment, config.seed)
    _train_phases(result, fitted, train_data, val_data, class_weight, on_epoch)
    return result


def _check_image_size(config: TrainConfig, info: DatasetInfo) -> None:
    if config.image_size != info.image_size:
        raise ValueError(
            f"image_size {config.image_size} differs from the dataset's {info.image_size} (labels.json); "
            "rebuild the dataset at that size or train at the dataset's size"
        )


def _build_seeded_model(config: TrainConfig, info: DatasetInfo) -> tuple[Any, ResolvedWeights]:
    """Seed Keras with ``config.seed``, then build the classifier for the dataset's labels and size."""
    import keras

    keras.utils.set_random_seed(config.seed)
    return build_model(
        info.n_classes,
        info.image_size,
        normalize_variant(config.variant),
        config.weights,
        dropout=config.dropout,
        bn_momentum=config.bn_momentum,
    )


def _train_and_val_label_counts(dataset: DatasetLike, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Images per label in the ``train`` and ``val`` splits; both must hold images."""
    counts = label_counts(dataset, "train", n_classes)
    val_counts = label_counts(dataset, "val", n_classes)
    if counts.sum() == 0 or val_counts.sum() == 0:
        raise ValueError("the train and val splits must both hold images")
    return counts, val_counts


def _plan(config: TrainConfig, train_images: int) -> EpochPlan:
    """:func:`plan_epochs` for this config; says so when the minimum adds epochs."""
    plan = plan_epochs(
        train_images,
        config.batch_size,
        config.epochs_head,
        config.epochs_finetune,
        config.min_steps,
        config.max_epochs,
    )
    if plan.epochs > config.epochs_head + config.epochs_finetune:
        log.info(
            "%d train images are %d steps an epoch: %d+%d epochs instead of %d+%d to train at least %d steps",
            train_images,
            plan.steps_per_epoch,
            plan.epochs_head,
            plan.epochs_finetune,
            config.epochs_head,
            config.epochs_finetune,
            config.min_steps,
        )
    return plan


def _input_pipelines(dataset: DatasetLike, config: TrainConfig, image_size: int) -> tuple[Any, Any]:
    """The shuffled ``train`` pipeline and the ``val`` one, decoded once and cached if they fit.

    ``config.cache_mb`` is shared: the train split (read every step) is cached first, the val split
    gets what is left. Neither pipeline augments: :func:`training_model` does.
    """
    budget = config.cache_mb * 2**20
    train_bytes = decoded_bytes(count_rows(dataset, "train"), image_size)
    val_budget = budget - train_bytes if train_bytes <= budget else budget
    log.info(
        "decoded train split: %.1f MiB, %s",
        train_bytes / 2**20,
        "cached in memory" if 0 < train_bytes <= budget else f"streamed (cache_mb {config.cache_mb})",
    )
    train_data = make_dataset(
        dataset,
        "train",
        image_size,
        config.batch_size,
        training=True,
        seed=config.seed,
        shuffle_buffer=config.shuffle_buffer,
        cache_bytes=budget,
    )
    val_data = make_dataset(dataset, "val", image_size, config.batch_size, cache_bytes=val_budget)
    return train_data, val_data


def training_model(model: Any, augment: bool, seed: int) -> Any:
    """The model that is fitted: ``model`` behind the augmentation layers when ``augment``.

    It shares ``model``'s layers and weights, so training it trains ``model``; Keras' random layers
    change pixels only in training mode, so validation sees the images as they are, and ``model``
    itself (what is logged and served) never augments. It is a new model even without augmentation,
    so ``model`` is never compiled: the file that is logged holds no optimizer, and loads with plain
    ``keras.saving.load_model`` without this package's :func:`optimizer` class.
    """
    import keras

    inputs = keras.Input(shape=model.input_shape[1:], dtype="float32", name="image")
    outputs = model(augmentation(seed)(inputs) if augment else inputs)
    return keras.Model(inputs, outputs, name=f"{model.name}_training")


def _phases(plan: EpochPlan, config: TrainConfig) -> list[tuple[str, int, float]]:
    """``(phase, epochs, learning_rate)`` of the phases that run: head, then finetune, if they have epochs."""
    phases = [
        ("head", plan.epochs_head, config.lr_head),
        ("finetune", plan.epochs_finetune, config.lr_finetune),
    ]
    return [(phase, epochs, learning_rate) for phase, epochs, learning_rate in phases if epochs != 0]


def _train_phases(
    result: TrainResult,
    fitted: Any,
    train_data: Any,
    val_data: Any,
    class_weight: dict[int, float] | None,
    on_epoch: EpochCallback | None,
) -> None:
    """Fit ``fitted`` (``result.model``, maybe behind augmentation) phase by phase, then record the best
    epoch and the time taken in ``result``.

    Every phase stops early on the validation loss (once ``result.plan.min_epochs`` have run) and
    ends on the best weights seen so far.
    """
    import keras

    model, config = result.model, result.config
    plan = result.plan or _plan(config, result.train_images)
    reporter_cls, keep_best_cls = _keras_callback_classes()
    keep_best = keep_best_cls()
    started = time.perf_counter()
    for phase, epochs, learning_rate in _phases(plan, config):
        _prepare_phase(model, fitted, result.weights, phase, learning_rate, config.fine_tune_layers)
        done = len(result.history)
        fitted.fit(
            train_data,
            validation_data=val_data,
            initial_epoch=done,
            epochs=done + epochs,
            class_weight=class_weight,
            shuffle=False,  # the tf.data pipeline shuffles
            verbose=0,
            callbacks=[
                reporter_cls(phase, on_epoch, result.history),
                keep_best,
                keras.callbacks.EarlyStopping(
                    monitor="val_loss", patience=config.patience, start_from_epoch=plan.min_epochs
                ),
            ],
        )
        keep_best.restore(model)  # the next phase starts from the best weights so far
    result.duration_s = time.perf_counter() - started
    result.best_epoch, result.best_val_loss = keep_best.best_epoch, keep_best.best_loss
    result.best_val_accuracy = keep_best.best_accuracy


def _prepare_phase(
    model: Any, fitted: Any, weights: ResolvedWeights, phase: str, learning_rate: float, fine_tune_layers: int
) -> None:
    """Choose what of ``model`` trains in ``phase``, and compile ``fitted`` (or set its learning rate)."""
    import keras

    if weights.pretrained:
        if phase == "head":
            freeze_base(model)
        else:
            trainable = unfreeze_top(model, fine_tune_layers)
            log.info("fine-tuning %d layers of the base", trainable)
    if weights.pretrained or getattr(fitted, "optimizer", None) is None:
        fitted.compile(
            optimizer=optimizer(learning_rate),
            loss=keras.losses.SparseCategoricalCrossentropy(),
            metrics=["accuracy"],
        )
    else:
        # From scratch the trainable set does not change between phases: lowering the learning
        # rate in place keeps the traced train step (recompiling costs a full retrace).
        fitted.optimizer.learning_rate.assign(learning_rate)
