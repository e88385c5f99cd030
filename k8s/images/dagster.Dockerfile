# syntax=docker/dockerfile:1.7
# The Dagster code location image (module fish_platform.definitions, gRPC on 3030). The Helm
# chart runs it as the user-code deployment, K8sRunLauncher runs each run in it, and with
# FISH_SPARK_MASTER=k8s://... Spark starts its executors from it too (dagster-entrypoint.sh).
# It also runs the Dagster webserver, daemon and migrate Job (k8s/dagster/values.yaml), so the
# instance's modules (dagster-webserver, dagster-k8s, dagster-postgres, dagster-aws for the S3
# compute log manager) are pinned in pyproject.toml in lockstep with dagster.
# Build from the repository root (`make images` does it with docker buildx or podman):
#   docker buildx build -f k8s/images/dagster.Dockerfile -t <registry>/fish-dagster:<tag> .
# TF_VARIANT=gpu (build argument) installs the CUDA build of TensorFlow instead of tensorflow-cpu,
# for training on the GPU node group (docs/deployment.md, "GPU training").

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS deps
ARG TF_VARIANT=cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY fish_platform/ fish_platform/
COPY serving/ serving/
COPY k8s/images/select-tensorflow.sh /usr/local/bin/select-tensorflow.sh
# All runtime dependencies, pinned in pyproject.toml (Dagster 1.13.27, PySpark, TensorFlow, MLflow),
# then the TensorFlow build TF_VARIANT asks for.
RUN pip install . \
 && select-tensorflow.sh "${TF_VARIANT}"

FROM ${PYTHON_IMAGE}
# PySpark needs a Java 17 runtime, for local[*] and for executors alike.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless tini \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --gid 10001 fish \
 && useradd --uid 10001 --gid fish --no-create-home --home-dir /tmp --shell /usr/sbin/nologin fish \
 && mkdir -p /opt/dagster/dagster_home /opt/dagster/app \
 && chown -R 10001:10001 /opt/dagster
COPY --from=deps /opt/venv /opt/venv
COPY k8s/images/dagster-entrypoint.sh /usr/local/bin/dagster-entrypoint.sh
WORKDIR /opt/dagster/app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64 \
    SPARK_HOME=/opt/venv/lib/python3.11/site-packages/pyspark \
    PYSPARK_PYTHON=/opt/venv/bin/python \
    PYSPARK_DRIVER_PYTHON=/opt/venv/bin/python \
    KERAS_HOME=/tmp/keras \
    MPLCONFIGDIR=/tmp/matplotlib
USER 10001:10001
EXPOSE 3030
ENTRYPOINT ["tini", "--", "dagster-entrypoint.sh"]
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "3030", "-m", "fish_platform.definitions"]
