"""The machine-learning layer: model building, tf.data input, training, evaluation, packaging.

Imports nothing from Dagster; the assets in :mod:`fish_platform.assets.model` are thin adapters.
TensorFlow is imported lazily inside functions so that importing this package stays cheap.
"""
