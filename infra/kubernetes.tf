# Key for envelope encryption of Kubernetes Secrets in etcd, and for the buckets.
resource "yandex_kms_symmetric_key" "main" {
  name              = "${var.name_prefix}-key"
  description       = "Encrypts Kubernetes secrets (etcd) and the fish platform buckets"
  default_algorithm = "AES_256"
  rotation_period   = "8760h" # yearly
  labels            = local.labels

  lifecycle {
    prevent_destroy = true # destroying it makes every object encrypted with it unreadable
  }
}

resource "yandex_kubernetes_cluster" "main" {
  #checkov:skip=CKV_YC_5:The API needs a public address so operators and CI can run kubectl/helm without a VPN; the security group admits only var.api_allowed_cidrs on 443/6443.
  name        = var.name_prefix
  description = "Fish platform: serving, MLflow, Dagster"
  network_id  = yandex_vpc_network.main.id

  master {
    version = var.k8s_version

    # One zone: a zonal master. multi_zone: a regional master, a replica in each of the three
    # zones, so the API survives the loss of a zone.
    dynamic "zonal" {
      for_each = var.multi_zone ? [] : [var.zone]
      content {
        zone      = zonal.value
        subnet_id = yandex_vpc_subnet.k8s[zonal.value].id
      }
    }
    dynamic "regional" {
      for_each = var.multi_zone ? ["ru-central1"] : []
      content {
        region = regional.value
        dynamic "location" {
          for_each = local.zones
          content {
            zone      = location.value
            subnet_id = yandex_vpc_subnet.k8s[location.value].id
          }
        }
      }
    }
    public_ip          = true
    security_group_ids = [yandex_vpc_security_group.k8s.id]

    maintenance_policy {
      auto_upgrade = true
      maintenance_window {
        day        = "sunday"
        start_time = "02:00"
        duration   = "3h"
      }
    }

    master_logging {
      enabled                    = true
      folder_id                  = var.folder_id
      kube_apiserver_enabled     = true
      cluster_autoscaler_enabled = true
      events_enabled             = true
      audit_enabled              = true
    }
  }

  service_account_id      = yandex_iam_service_account.k8s_cluster.id
  node_service_account_id = yandex_iam_service_account.k8s_nodes.id
  cluster_ipv4_range      = var.cluster_ipv4_range
  service_ipv4_range      = var.service_ipv4_range
  release_channel         = "STABLE"
  # NetworkPolicies (k8s/base/networkpolicies.yaml, k8s/overlays/yandex) need a provider.
  network_policy_provider = "CALICO"

  kms_provider {
    key_id = yandex_kms_symmetric_key.main.id
  }

  labels = local.labels

  depends_on = [
    yandex_resourcemanager_folder_iam_member.roles,
  ]
}

# One autoscaling node group per zone (Yandex autoscales a group within a single zone): the serving
# pods' zone spread (k8s/overlays/yandex) has a node to go to in every zone.
resource "yandex_kubernetes_node_group" "main" {
  for_each    = local.zone_subnets
  cluster_id  = yandex_kubernetes_cluster.main.id
  name        = "${var.name_prefix}-nodes-${each.key}"
  description = "Serving pods (HPA 2..10), MLflow, Dagster and its run pods"
  version     = var.k8s_version
  labels      = local.labels

  instance_template {
    platform_id = var.node_platform_id

    network_interface {
      nat                = false
      subnet_ids         = [yandex_vpc_subnet.k8s[each.key].id]
      security_group_ids = [yandex_vpc_security_group.k8s.id]
    }

    resources {
      cores         = var.node_cores
      memory        = var.node_memory_gb
      core_fraction = 100
    }

    boot_disk {
      type = "network-ssd"
      size = var.node_disk_gb
    }

    container_runtime {
      type = "containerd"
    }

    scheduling_policy {
      preemptible = false
    }
  }

  # The cluster autoscaler adds nodes when pods (more serving replicas, a training run) do not fit.
  scale_policy {
    auto_scale {
      min     = var.node_min
      max     = var.node_max
      initial = var.node_initial
    }
  }

  allocation_policy {
    location {
      zone = each.key
    }
  }

  maintenance_policy {
    auto_upgrade = true
    auto_repair  = true

    maintenance_window {
      day        = "sunday"
      start_time = "03:00"
      duration   = "3h"
    }
  }
}

# GPU nodes for training, off by default (gpu_node_max = 0). Tainted, so only pods that tolerate
# nvidia.com/gpu (the training run's op_tags, docs/deployment.md) land there; scaled from zero by
# the cluster autoscaler when such a pod is pending. The node image brings the NVIDIA driver and
# device plugin (gpu_environment runc_drivers_cuda); the Dagster image's CUDA build of TensorFlow
# comes from `FISH_TF_VARIANT=gpu make images`.
resource "yandex_kubernetes_node_group" "gpu" {
  count       = var.gpu_node_max > 0 ? 1 : 0
  cluster_id  = yandex_kubernetes_cluster.main.id
  name        = "${var.name_prefix}-gpu"
  description = "GPU nodes for training runs (tainted nvidia.com/gpu)"
  version     = var.k8s_version
  labels      = local.labels

  node_labels = {
    "fish-platform.io/node-pool" = "gpu"
  }
  node_taints = ["nvidia.com/gpu=true:NoSchedule"]

  instance_template {
    platform_id = var.gpu_platform_id

    network_interface {
      nat                = false
      subnet_ids         = [yandex_vpc_subnet.k8s[var.gpu_zone].id]
      security_group_ids = [yandex_vpc_security_group.k8s.id]
    }

    resources {
      cores  = var.gpu_node_cores
      memory = var.gpu_node_memory_gb
      gpus   = var.gpu_node_gpus
    }

    gpu_settings {
      gpu_environment = "runc_drivers_cuda"
    }

    boot_disk {
      type = "network-ssd"
      size = var.node_disk_gb
    }

    container_runtime {
      type = "containerd"
    }

    scheduling_policy {
      preemptible = false
    }
  }

  scale_policy {
    auto_scale {
      min     = 0
      max     = var.gpu_node_max
      initial = 0
    }
  }

  allocation_policy {
    location {
      zone = var.gpu_zone
    }
  }

  maintenance_policy {
    auto_upgrade = true
    auto_repair  = true

    maintenance_window {
      day        = "sunday"
      start_time = "03:00"
      duration   = "3h"
    }
  }
}
