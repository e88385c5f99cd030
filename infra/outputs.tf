output "registry_id" {
  description = "Container Registry id; images are cr.yandex/<id>/fish-{serving,dagster,mlflow}."
  value       = yandex_container_registry.main.id
}

output "registry_url" {
  description = "Registry prefix for docker tag/push."
  value       = "cr.yandex/${yandex_container_registry.main.id}"
}

output "kubernetes_cluster_id" {
  description = "For: yc managed-kubernetes cluster get-credentials <id> --external"
  value       = yandex_kubernetes_cluster.main.id
}

output "kubernetes_api_url" {
  description = "Public endpoint of the Kubernetes API."
  value       = yandex_kubernetes_cluster.main.master[0].external_v4_endpoint
}

output "postgresql_host" {
  description = "Read-write host of Managed PostgreSQL (always the current primary); port 6432."
  value       = "c-${yandex_mdb_postgresql_cluster.main.id}.rw.mdb.yandexcloud.net"
}

output "redis_host" {
  description = "Read-write host of Managed Redis; TLS port 6380."
  value       = "c-${yandex_mdb_redis_cluster.cache.id}.rw.mdb.yandexcloud.net"
}

output "s3_endpoint_url" {
  description = "Object Storage endpoint (FISH_S3_ENDPOINT_URL, MLFLOW_S3_ENDPOINT_URL)."
  value       = "https://storage.yandexcloud.net"
}

output "models_bucket" {
  description = "Bucket of MLflow artifacts."
  value       = yandex_storage_bucket.models.bucket
}

output "data_bucket" {
  description = "Bucket of raw images (FISH_RAW_URI=s3://<bucket>/raw), platform state (FISH_DATA_URI=s3://<bucket>/platform) and Dagster step logs."
  value       = yandex_storage_bucket.data.bucket
}

# --- sensitive: read by k8s/deploy.sh to create the Kubernetes Secrets -------------------------

output "mlflow_backend_store_uri" {
  description = "MLflow --backend-store-uri (Secret mlflow-db)."
  # postgresql+psycopg2: SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; the image has psycopg2.
  value     = "postgresql+psycopg2://${yandex_mdb_postgresql_user.mlflow.name}:${urlencode(var.pg_mlflow_password)}@c-${yandex_mdb_postgresql_cluster.main.id}.rw.mdb.yandexcloud.net:6432/${yandex_mdb_postgresql_database.mlflow.name}?sslmode=require"
  sensitive = true
}

output "dagster_postgresql_password" {
  description = "Password of the dagster database user (Secret dagster-postgresql-secret)."
  value       = var.pg_dagster_password
  sensitive   = true
}

output "redis_url" {
  description = "REDIS_URL of the serving pods (Secret fish-redis)."
  value       = "rediss://:${urlencode(var.redis_password)}@c-${yandex_mdb_redis_cluster.cache.id}.rw.mdb.yandexcloud.net:6380/0"
  sensitive   = true
}

output "dagster_s3_access_key_id" {
  description = "Static access key of the dagster service account: data and models buckets (Secret fish-s3)."
  value       = yandex_iam_service_account_static_access_key.storage["dagster"].access_key
  sensitive   = true
}

output "dagster_s3_secret_access_key" {
  description = "Secret part of that key (Secret fish-s3)."
  value       = yandex_iam_service_account_static_access_key.storage["dagster"].secret_key
  sensitive   = true
}

output "mlflow_s3_access_key_id" {
  description = "Static access key of the mlflow service account: the models bucket (Secret fish-s3-mlflow)."
  value       = yandex_iam_service_account_static_access_key.storage["mlflow"].access_key
  sensitive   = true
}

output "mlflow_s3_secret_access_key" {
  description = "Secret part of that key (Secret fish-s3-mlflow)."
  value       = yandex_iam_service_account_static_access_key.storage["mlflow"].secret_key
  sensitive   = true
}

output "serving_s3_access_key_id" {
  description = "Static access key of the serving service account: read-only on the models bucket (not mounted today)."
  value       = yandex_iam_service_account_static_access_key.storage["serving"].access_key
  sensitive   = true
}

output "serving_s3_secret_access_key" {
  description = "Secret part of that key."
  value       = yandex_iam_service_account_static_access_key.storage["serving"].secret_key
  sensitive   = true
}
