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

# The workloads (MLflow, Dagster runs): read and write the two buckets through a static key.
resource "yandex_iam_service_account" "workloads" {
  name        = "${var.name_prefix}-workloads"
  description = "Fish platform workloads: Object Storage access"
}

# CI: pushes the images.
resource "yandex_iam_service_account" "ci" {
  name        = "${var.name_prefix}-ci"
  description = "CI pushes the fish platform images"
}

locals {
  folder_roles = {
    cluster_agent     = { sa = yandex_iam_service_account.k8s_cluster.id, role = "k8s.clusters.agent" }
    cluster_vpc       = { sa = yandex_iam_service_account.k8s_cluster.id, role = "vpc.publicAdmin" }
    cluster_lb        = { sa = yandex_iam_service_account.k8s_cluster.id, role = "load-balancer.admin" }
    cluster_kms       = { sa = yandex_iam_service_account.k8s_cluster.id, role = "kms.keys.encrypterDecrypter" }
    nodes_puller      = { sa = yandex_iam_service_account.k8s_nodes.id, role = "container-registry.images.puller" }
    workloads_storage = { sa = yandex_iam_service_account.workloads.id, role = "storage.editor" }
    workloads_kms     = { sa = yandex_iam_service_account.workloads.id, role = "kms.keys.encrypterDecrypter" }
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

resource "yandex_iam_service_account_static_access_key" "workloads" {
  service_account_id = yandex_iam_service_account.workloads.id
  description        = "S3 key of the fish platform workloads (Secret fish-s3)"
}
