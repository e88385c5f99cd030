# syntax=docker/dockerfile:1.7
# MLflow tracking server image: MLflow with its basic-auth app's extra (Flask-WTF, `mlflow[auth]`),
# the PostgreSQL driver (backend store) and boto3 (S3 artifacts). Versions match pyproject.toml. Build from the repository root:
#   docker build -f k8s/images/mlflow.Dockerfile -t fish-platform/mlflow:dev .

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm
FROM ${PYTHON_IMAGE}
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
RUN pip install "mlflow[auth]==3.17.2" psycopg2-binary==2.9.13 boto3==1.44.8 \
 && groupadd --gid 10001 mlflow \
 && useradd --uid 10001 --gid mlflow --no-create-home --home-dir /tmp --shell /usr/sbin/nologin mlflow
USER 10001:10001
EXPOSE 5000
ENTRYPOINT ["mlflow"]
CMD ["server", "--host=0.0.0.0", "--port=5000"]
