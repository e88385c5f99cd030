#!/usr/bin/env bash
# Deploy the fish platform to the current kubectl context.
#
#   k8s/deploy.sh [local|yandex]          (default: $FISH_OVERLAY, else local)
#
# Steps: check that every image exists in its registry and that cert-manager is installed ->
# namespace -> Secrets from k8s/secrets/<overlay>/*.env -> kustomize overlay (serving, MLflow,
# Redis/PostgreSQL or their managed stand-ins, monitoring, NetworkPolicies, TLS) -> Dagster Helm
# release -> wait for what can be ready before the first model -> print the URLs. Idempotent: run
# it again after any change.
#
# Serving is not waited for: its pods report not ready (/readyz 503) until a model version carries
# the `production` alias, which the first pipeline run sets. They become ready by themselves then.
#
# Environment:
#   IMAGE_TAG            image tag to deploy (default: the commit, as `make images` tags it)
#   FISH_IMAGE_REGISTRY  local: the registry of the images (default localhost:5001)
#   REGISTRY_ID          yandex: Container Registry id (default: terraform output registry_id)
#   FISH_HOST            yandex: the public DNS name of the page (default: <load balancer IP>.sslip.io
#                        once ingress-nginx has an address)
#   FISH_ACME_EMAIL      yandex: the e-mail Let's Encrypt sends expiry notices to (required)
#   FISH_SPARK=k8s       yandex: run the Spark transform on Kubernetes executors (k8s/spark/)
#   FISH_SKIP_IMAGE_CHECK=1  deploy without checking the images exist (no docker/podman here)
#   DAGSTER_CHART_VERSION  Helm chart version (default: the dagster version pinned in pyproject.toml)
#   SECRETS_DIR          where the *.env secret files are (default: k8s/secrets/<overlay>)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=scripts/image-lib.sh
. "$root/scripts/image-lib.sh"
overlay=${1:-${FISH_OVERLAY:-local}}
namespace=fish-platform
secrets_dir=${SECRETS_DIR:-$here/secrets/$overlay}

die() { echo "deploy: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "$1 is required ($2)"; }
random_hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }

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

tf_output() { terraform -chdir="$root/infra" output -raw "$1"; }

# --- what this deployment points at -------------------------------------------------------------
IMAGE_TAG=${IMAGE_TAG:-$(image_tag "$root")}
if [ "$overlay" = yandex ]; then
  need terraform "https://developer.hashicorp.com/terraform/install"
  REGISTRY_ID=${REGISTRY_ID:-$(tf_output registry_id)}
  registry="cr.yandex/$REGISTRY_ID"
  pull_policy=IfNotPresent  # immutable tags: a cached image is the right one
  [ -n "${FISH_ACME_EMAIL:-}" ] || die "set FISH_ACME_EMAIL (Let's Encrypt account e-mail for the TLS certificate)"
  if [ -z "${FISH_HOST:-}" ]; then
    lb_ip=$(kubectl -n ingress-nginx get service ingress-nginx-controller \
      -o jsonpath='{.status.loadBalancer.ingress[0].ip}' 2>/dev/null || true)
    [ -n "$lb_ip" ] || die "set FISH_HOST (a DNS name pointing at the ingress-nginx load balancer), or install ingress-nginx first (docs/deployment.md)"
    FISH_HOST="$lb_ip.sslip.io"
  fi
else
  registry=${FISH_IMAGE_REGISTRY:-localhost:5001}
  pull_policy=Always  # a node never runs an older build it has cached
fi

# --- every image must exist before anything is applied -------------------------------------------
images=()
for entry in "${FISH_IMAGES[@]}"; do
  read -r name _ <<<"$entry"
  images+=("$registry/$name:$IMAGE_TAG")
done
if [ "${FISH_SKIP_IMAGE_CHECK:-}" = 1 ]; then
  echo "deploy: not checking that the images exist (FISH_SKIP_IMAGE_CHECK=1)"
else
  engine=$(container_engine) || die "cannot check that the images exist: no docker (buildx) or podman; install one, or set FISH_SKIP_IMAGE_CHECK=1"
  missing=()
  for image in "${images[@]}"; do
    image_exists "$engine" "$image" || missing+=("$image")
  done
  [ ${#missing[@]} -eq 0 ] || die "not in the registry: ${missing[*]} (build and push them: make images)"
  echo "deploy: images found: ${images[*]}"
fi

# The Ingress certificate comes from cert-manager.
kubectl get crd certificates.cert-manager.io issuers.cert-manager.io >/dev/null 2>&1 \
  || die "cert-manager is not installed in this cluster (docs/deployment.md: helm install cert-manager ...)"

# Scratch kustomization next to the overlays (kustomize takes relative paths only).
work=$(mktemp -d "$here/overlays/.deploy.XXXXXX")
trap 'rm -rf "$work"' EXIT

# --- secret files -----------------------------------------------------------------------------
mkdir -p "$secrets_dir"
write_once() {  # file content: written only when missing
  [ -f "$1" ] || printf '%s' "$2" >"$1"
}
if [ "$overlay" = yandex ]; then
  PG_HOST=$(tf_output postgresql_host)
  MODELS_BUCKET=$(tf_output models_bucket)
  DATA_BUCKET=$(tf_output data_bucket)
  # Secret files missing? Write them from the (sensitive) terraform outputs.
  write_once "$secrets_dir/mlflow-db.env" "backend-store-uri=$(tf_output mlflow_backend_store_uri)
"
  write_once "$secrets_dir/dagster-postgres.env" "postgresql-password=$(tf_output dagster_postgresql_password)
"
  write_once "$secrets_dir/redis.env" "REDIS_URL=$(tf_output redis_url)
"
  # One storage key per workload: Dagster (code server, runs, webserver) and MLflow.
  write_once "$secrets_dir/s3.env" "AWS_ACCESS_KEY_ID=$(tf_output dagster_s3_access_key_id)
AWS_SECRET_ACCESS_KEY=$(tf_output dagster_s3_secret_access_key)
"
  write_once "$secrets_dir/s3-mlflow.env" "AWS_ACCESS_KEY_ID=$(tf_output mlflow_s3_access_key_id)
AWS_SECRET_ACCESS_KEY=$(tf_output mlflow_s3_secret_access_key)
"
fi
# Chosen here when missing (they stay in these files, which git ignores).
write_once "$secrets_dir/grafana.env" "admin-user=admin
admin-password=$(random_hex 18)
"
write_once "$secrets_dir/mlflow-auth.env" "MLFLOW_TRACKING_USERNAME=fish-admin
MLFLOW_TRACKING_PASSWORD=$(random_hex 18)
"
write_once "$secrets_dir/mlflow-server.env" "flask-secret-key=$(random_hex 32)
"
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
[ "$overlay" = yandex ] && create_secret fish-s3-mlflow "$secrets_dir/s3-mlflow.env"
create_secret mlflow-db "$secrets_dir/mlflow-db.env"
create_secret dagster-postgresql-secret "$secrets_dir/dagster-postgres.env"
create_secret fish-s3 "$secrets_dir/s3.env"
create_secret grafana-admin "$secrets_dir/grafana.env"
create_secret mlflow-auth "$secrets_dir/mlflow-auth.env"
create_secret mlflow-server "$secrets_dir/mlflow-server.env"

# --- manifests: the overlay, plus what only this run knows (images, buckets, host) -------------
if [ "$overlay" = yandex ]; then
  sed -e "s|^spark.kubernetes.container.image .*|spark.kubernetes.container.image $registry/fish-dagster:$IMAGE_TAG|" \
    "$here/spark/spark-defaults.conf" >"$work/spark-defaults.conf"
  cp "$here/spark/executor-pod-template.yaml" "$work/executor-pod-template.yaml"
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
      - FISH_DATA_URI=s3://$DATA_BUCKET/platform
$spark_env  - name: spark-defaults
    namespace: $namespace
    behavior: merge
    files:
      - spark-defaults.conf
      - executor-pod-template.yaml
patches:
  - target:
      kind: Ingress
      name: fish-platform
    patch: |-
      - op: replace
        path: /spec/rules/0/host
        value: "$FISH_HOST"
      - op: replace
        path: /spec/tls/0/hosts/0
        value: "$FISH_HOST"
  - target:
      kind: Certificate
      name: fish-platform-tls
    patch: |-
      - op: replace
        path: /spec/dnsNames/0
        value: "$FISH_HOST"
  - target:
      kind: Issuer
      name: letsencrypt
    patch: |-
      - op: replace
        path: /spec/acme/email
        value: "$FISH_ACME_EMAIL"
YAML
else
  cat >"$work/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../local
images:
  - name: localhost:5001/fish-serving
    newName: $registry/fish-serving
    newTag: "$IMAGE_TAG"
  - name: localhost:5001/fish-mlflow
    newName: $registry/fish-mlflow
    newTag: "$IMAGE_TAG"
YAML
fi
kubectl apply -k "$work"

# --- Dagster (official Helm chart) ------------------------------------------------------------
helm repo add dagster https://dagster-io.github.io/helm >/dev/null 2>&1 || true
helm repo update dagster >/dev/null
fill() {  # template output: the ${...} placeholders of the values files
  sed -e "s|\${IMAGE_REGISTRY}|$registry|g" -e "s|\${IMAGE_TAG}|$IMAGE_TAG|g" \
      -e "s|\${IMAGE_PULL_POLICY}|$pull_policy|g" \
      -e "s|\${PG_HOST}|${PG_HOST:-}|g" -e "s|\${DATA_BUCKET}|${DATA_BUCKET:-}|g" "$1" >"$2"
  if grep -n '\${' "$2" >&2; then die "unfilled placeholder in $1"; fi
}
fill "$here/dagster/values.yaml" "$work/values.yaml"
values=(-f "$work/values.yaml")
if [ "$overlay" = yandex ]; then
  fill "$here/dagster/values-yandex.yaml" "$work/values-yandex.yaml"
  values+=(-f "$work/values-yandex.yaml")
fi
if [ "${FISH_SPARK:-}" = k8s ]; then
  values+=(-f "$here/spark/values-spark-k8s.yaml")
fi
# --wait: the webserver, daemon and code server need no model, so they can be ready now.
helm upgrade --install dagster dagster/dagster --version "$chart_version" \
  --namespace "$namespace" "${values[@]}" --wait --timeout 15m

# --- wait for what can be ready before the first model, and tell -------------------------------
ready_now=(deployment/mlflow deployment/prometheus deployment/grafana)
[ "$overlay" = local ] && ready_now+=(statefulset/postgres deployment/redis deployment/minio)
for workload in "${ready_now[@]}"; do
  kubectl -n "$namespace" rollout status "$workload" --timeout=10m
done
cat <<TEXT
deploy: the platform is up. Serving (deployment/fish-serving) is deployed but stays not ready
        (/readyz 503) until a model version carries the 'production' alias: run the pipeline
        once (Dagster UI: Materialize all, or upload images to FISH_RAW_URI for the sensor), and
        the serving pods load the promoted model and become ready by themselves. Watch it with
          kubectl -n $namespace rollout status deployment/fish-serving
TEXT
"$here/print-urls.sh" "$overlay"
