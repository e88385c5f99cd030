#!/bin/sh
# Chooses the TensorFlow build of the Dagster image (build argument TF_VARIANT, run at build time):
#   cpu  keep tensorflow-cpu, as pinned in pyproject.toml (the default)
#   gpu  replace it by the CUDA build of the same version: tensorflow[and-cuda] (NVIDIA's CUDA and
#        cuDNN wheels; the GPU node's driver comes from the node image, infra/kubernetes.tf)
set -eu

variant=${1:-cpu}
version=$(python -c "import importlib.metadata as m; print(m.version('tensorflow-cpu'))")
case "$variant" in
  cpu)
    echo "TensorFlow: tensorflow-cpu==$version (CPU build)"
    ;;
  gpu)
    echo "TensorFlow: tensorflow[and-cuda]==$version (CUDA build)"
    pip uninstall --yes tensorflow-cpu
    pip install "tensorflow[and-cuda]==$version"
    ;;
  *)
    echo "select-tensorflow: TF_VARIANT must be cpu or gpu, not '$variant'" >&2
    exit 2
    ;;
esac
