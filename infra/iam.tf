# Service accounts, each with the narrowest roles that let it work.

# The Managed Kubernetes control plane: manages cluster resources, load balancers, public IPs.
resource "yandex_iam_service_account" "k8s_cluster" {
  name        = "${var.name_prefix}-k8s-cluster"
  description = "Kubernetes control plane of the fish platform"
}

# The nodes: pull images from Container Registry.
resource "yandex_iam_service_account" "k8s_nodes" {
  name        = "${var.name_prefix}-k8s-nodes"
  description = "Kubernetes nodes of the fish platform (image pulls)"
}

# One storage identity per workload, each with a static key (a Kubernetes Secret) and access to its
# buckets only, granted on the buckets (storage.tf), never a folder-wide storage role: none of these
# keys can delete a bucket or change its settings; only Terraform's own identity can.
#   dagster: the code server, run pods, webserver, Spark executors (Secret fish-s3): read/write
#            the data bucket (raw images, FISH_DATA_URI, step logs) and the models bucket
#   mlflow:  the MLflow server (Secret fish-s3-mlflow): read/write the models bucket (artifacts)
#   serving: read the models bucket only (outputs serving_s3_*; today serving reads models through
#            MLflow's artifact proxy and mounts no key)
resource "yandex_iam_service_account" "dagster" {
  name        = "${var.name_prefix}-dagster"
  description = "Fish platform Dagster runs and code server: data and model buckets"
}

resource "yandex_iam_service_account" "mlflow" {
  name        = "${var.name_prefix}-mlflow"
  description = "Fish platform MLflow server: model artifacts"
}

resource "yandex_iam_service_account" "serving" {
  name        = "${var.name_prefix}-serving"
  description = "Fish platform serving: read-only on model artifacts"
}

# CI: pushes the images.
resource "yandex_iam_service_account" "ci" {
  name        = "${var.name_prefix}-ci"
  description = "CI pushes the fish platform images"
}

locals {
  folder_roles = {
    cluster_agent = { sa = yandex_iam_service_account.k8s_cluster.id, role = "k8s.clusters.agent" }
    cluster_vpc   = { sa = yandex_iam_service_account.k8s_cluster.id, role = "vpc.publicAdmin" }
    cluster_lb    = { sa = yandex_iam_service_account.k8s_cluster.id, role = "load-balancer.admin" }
    cluster_kms   = { sa = yandex_iam_service_account.k8s_cluster.id, role = "kms.keys.encrypterDecrypter" }
    nodes_puller  = { sa = yandex_iam_service_account.k8s_nodes.id, role = "container-registry.images.puller" }
  }
  storage_accounts = {
    dagster = yandex_iam_service_account.dagster.id
    mlflow  = yandex_iam_service_account.mlflow.id
    serving = yandex_iam_service_account.serving.id
  }
}

resource "yandex_resourcemanager_folder_iam_member" "roles" {
  for_each  = local.folder_roles
  folder_id = var.folder_id
  role      = each.value.role
  member    = "serviceAccount:${each.value.sa}"
}

# Pushing is granted on the registry only, not the folder.
resource "yandex_container_registry_iam_binding" "ci_pusher" {
  registry_id = yandex_container_registry.main.id
  role        = "container-registry.images.pusher"
  members     = ["serviceAccount:${yandex_iam_service_account.ci.id}"]
}

# The buckets are encrypted with the platform key: every storage identity uses it (on the key only).
resource "yandex_kms_symmetric_key_iam_binding" "storage_accounts" {
  symmetric_key_id = yandex_kms_symmetric_key.main.id
  role             = "kms.keys.encrypterDecrypter"
  members          = [for id in values(local.storage_accounts) : "serviceAccount:${id}"]
}

resource "yandex_iam_service_account_static_access_key" "storage" {
  for_each           = local.storage_accounts
  service_account_id = each.value
  description        = "S3 key of the fish platform ${each.key} workload"
}
