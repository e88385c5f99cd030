#!/usr/bin/env bash
# Deploy the fish platform to the current kubectl context.
#
#   k8s/deploy.sh [local|yandex]          (default: $FISH_OVERLAY, else local)
#
# Steps: namespace -> Secrets from k8s/secrets/<overlay>/*.env -> kustomize overlay (serving,
# MLflow, Redis/PostgreSQL or their managed stand-ins, monitoring) -> Dagster Helm release ->
# wait for rollouts -> print the URLs. Idempotent: run it again after any change.
#
# Environment:
#   IMAGE_TAG            image tag to deploy (default: dev for local, the git commit for yandex)
#   REGISTRY_ID          Yandex Container Registry id (default: terraform output registry_id)
#   FISH_SPARK=k8s       yandex: run the Spark transform on Kubernetes executors (k8s/spark/)
#   DAGSTER_CHART_VERSION  Helm chart version (default: the dagster version pinned in pyproject.toml)
#   SECRETS_DIR          where the *.env secret files are (default: k8s/secrets/<overlay>)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
overlay=${1:-${FISH_OVERLAY:-local}}
namespace=fish-platform
secrets_dir=${SECRETS_DIR:-$here/secrets/$overlay}

die() { echo "deploy: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "$1 is required ($2)"; }

case "$overlay" in
  local|yandex) ;;
  *) die "unknown overlay '$overlay' (local or yandex)" ;;
esac
if [ "${FISH_SPARK:-}" = k8s ] && [ "$overlay" != yandex ]; then
  die "FISH_SPARK=k8s is for the yandex overlay (a laptop cluster runs Spark as local[*])"
fi
need kubectl "https://kubernetes.io/docs/tasks/tools/"
need helm "https://helm.sh/docs/intro/install/"

chart_version=${DAGSTER_CHART_VERSION:-$(sed -n 's/.*"dagster==\([0-9.]*\)".*/\1/p' "$root/pyproject.toml")}
[ -n "$chart_version" ] || die "cannot read the dagster version from pyproject.toml; set DAGSTER_CHART_VERSION"

# Scratch kustomization next to the overlays (kustomize takes relative paths only).
work=$(mktemp -d "$here/overlays/.deploy.XXXXXX")
trap 'rm -rf "$work"' EXIT

tf_output() { terraform -chdir="$root/infra" output -raw "$1"; }

# --- values only known after `terraform apply` (yandex) ------------------------------------
if [ "$overlay" = yandex ]; then
  need terraform "https://developer.hashicorp.com/terraform/install"
  REGISTRY_ID=${REGISTRY_ID:-$(tf_output registry_id)}
  IMAGE_TAG=${IMAGE_TAG:-$(git -C "$root" rev-parse --short HEAD)}
  PG_HOST=$(tf_output postgresql_host)
  MODELS_BUCKET=$(tf_output models_bucket)
  DATA_BUCKET=$(tf_output data_bucket)
  mkdir -p "$secrets_dir"
  # Secret files missing? Write them from the (sensitive) terraform outputs.
  [ -f "$secrets_dir/mlflow-db.env" ] || printf 'backend-store-uri=%s\n' "$(tf_output mlflow_backend_store_uri)" >"$secrets_dir/mlflow-db.env"
  [ -f "$secrets_dir/dagster-postgres.env" ] || printf 'postgresql-password=%s\n' "$(tf_output dagster_postgresql_password)" >"$secrets_dir/dagster-postgres.env"
  [ -f "$secrets_dir/redis.env" ] || printf 'REDIS_URL=%s\n' "$(tf_output redis_url)" >"$secrets_dir/redis.env"
  [ -f "$secrets_dir/s3.env" ] || printf 'AWS_ACCESS_KEY_ID=%s\nAWS_SECRET_ACCESS_KEY=%s\n' \
    "$(tf_output s3_access_key_id)" "$(tf_output s3_secret_access_key)" >"$secrets_dir/s3.env"
else
  IMAGE_TAG=${IMAGE_TAG:-dev}
  mkdir -p "$secrets_dir"
fi
if [ ! -f "$secrets_dir/grafana.env" ]; then
  # No Grafana password chosen yet: make one (it stays in this file, which git ignores).
  printf 'admin-user=admin\nadmin-password=%s\n' "$(od -An -N18 -tx1 /dev/urandom | tr -d ' \n')" \
    >"$secrets_dir/grafana.env"
fi
chmod 600 "$secrets_dir"/*.env

# --- namespace and secrets --------------------------------------------------------------------
kubectl apply -f "$here/base/namespace.yaml"

create_secret() {  # name file
  [ -f "$2" ] || die "missing $2 (copy $2.example and fill it in; see k8s/secrets/README.md)"
  kubectl -n "$namespace" create secret generic "$1" --from-env-file="$2" \
    --dry-run=client -o yaml | kubectl apply -f -
}
[ "$overlay" = local ] && create_secret fish-postgres "$secrets_dir/postgres.env"
[ "$overlay" = yandex ] && create_secret fish-redis "$secrets_dir/redis.env"
create_secret mlflow-db "$secrets_dir/mlflow-db.env"
create_secret dagster-postgresql-secret "$secrets_dir/dagster-postgres.env"
create_secret fish-s3 "$secrets_dir/s3.env"
create_secret grafana-admin "$secrets_dir/grafana.env"

# --- manifests: the overlay, plus what only this run knows (images, buckets) -------------------
if [ "$overlay" = yandex ]; then
  registry="cr.yandex/$REGISTRY_ID"
  sed "s|^spark.kubernetes.container.image .*|spark.kubernetes.container.image $registry/fish-dagster:$IMAGE_TAG|" \
    "$here/spark/spark-defaults.conf" >"$work/spark-defaults.conf"
  spark_env=""
  if [ "${FISH_SPARK:-}" = k8s ]; then
    spark_env="      - FISH_SPARK_MASTER=k8s://https://kubernetes.default.svc:443
      - SPARK_CONF_DIR=/opt/spark-conf
"
  fi
  cat >"$work/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../yandex
images:
  - name: cr.yandex/REGISTRY_ID/fish-serving
    newName: $registry/fish-serving
    newTag: "$IMAGE_TAG"
  - name: cr.yandex/REGISTRY_ID/fish-mlflow
    newName: $registry/fish-mlflow
    newTag: "$IMAGE_TAG"
configMapGenerator:
  - name: mlflow-config
    namespace: $namespace
    behavior: merge
    literals:
      - MLFLOW_ARTIFACTS_DESTINATION=s3://$MODELS_BUCKET/mlflow
  - name: dagster-platform-env
    namespace: $namespace
    behavior: merge
    literals:
      - FISH_RAW_URI=s3://$DATA_BUCKET/raw
$spark_env  - name: spark-defaults
    namespace: $namespace
    behavior: merge
    files:
      - spark-defaults.conf
YAML
  kubectl apply -k "$work"
else
  kubectl apply -k "$here/overlays/local"
fi

# --- Dagster (official Helm chart) ------------------------------------------------------------
helm repo add dagster https://dagster-io.github.io/helm >/dev/null 2>&1 || true
helm repo update dagster >/dev/null
values=(-f "$here/dagster/values.yaml")
if [ "$overlay" = yandex ]; then
  # Fill the ${...} placeholders of values-yandex.yaml from the environment.
  sed -e "s|\${PG_HOST}|$PG_HOST|g" -e "s|\${REGISTRY_ID}|$REGISTRY_ID|g" \
      -e "s|\${IMAGE_TAG}|$IMAGE_TAG|g" -e "s|\${MODELS_BUCKET}|$MODELS_BUCKET|g" \
      "$here/dagster/values-yandex.yaml" >"$work/values-yandex.yaml"
  values+=(-f "$work/values-yandex.yaml")
fi
if [ "${FISH_SPARK:-}" = k8s ]; then
  values+=(-f "$here/spark/values-spark-k8s.yaml")
fi
helm upgrade --install dagster dagster/dagster --version "$chart_version" \
  --namespace "$namespace" "${values[@]}" --wait --timeout 15m

# --- wait and tell ----------------------------------------------------------------------------
for deployment in mlflow fish-serving prometheus grafana; do
  kubectl -n "$namespace" rollout status "deployment/$deployment" --timeout=10m
done
"$here/print-urls.sh" "$overlay"
