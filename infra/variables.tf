variable "cloud_id" {
  description = "Yandex Cloud cloud id (yc resource-manager cloud list)."
  type        = string
}

variable "folder_id" {
  description = "Folder that receives every resource (yc resource-manager folder list)."
  type        = string
}

variable "zone" {
  description = "Availability zone of the Kubernetes master, nodes and databases when multi_zone is false (and the first zone when it is true)."
  type        = string
  default     = "ru-central1-a"
}

variable "multi_zone" {
  description = "Spread over var.zones: a regional (highly available) Kubernetes master, one autoscaling node group per zone, subnets and database hosts in every zone. Off: everything in var.zone."
  type        = bool
  default     = false
}

variable "zones" {
  description = "Zones used when multi_zone is true (Yandex Cloud region ru-central1)."
  type        = list(string)
  default     = ["ru-central1-a", "ru-central1-b", "ru-central1-d"]

  validation {
    condition     = length(var.zones) == 3 && alltrue([for z in var.zones : startswith(z, "ru-central1-")])
    error_message = "A regional master needs three zones of ru-central1."
  }
}

variable "name_prefix" {
  description = "Prefix of every resource name."
  type        = string
  default     = "fish-platform"
}

# --- network ----------------------------------------------------------------------------------

variable "k8s_subnet_cidr" {
  description = "Range of the Kubernetes master and node subnets, one /24 per zone carved from it. The yandex overlay's kubernetes-api-egress NetworkPolicy allows exactly this range (k8s/overlays/yandex/managed-data-egress.yaml)."
  type        = string
  default     = "10.10.0.0/16"

  validation {
    condition     = var.k8s_subnet_cidr == "10.10.0.0/16"
    error_message = "k8s_subnet_cidr is also written in k8s/overlays/yandex/managed-data-egress.yaml; change both together."
  }
}

variable "data_subnet_cidr" {
  description = "Range of the Managed PostgreSQL and Managed Redis subnets, one /24 per zone carved from it. Must stay 10.20.0.0/16, the range k8s/overlays/yandex/managed-data-egress.yaml fences off."
  type        = string
  default     = "10.20.0.0/16"

  validation {
    condition     = var.data_subnet_cidr == "10.20.0.0/16"
    error_message = "data_subnet_cidr must be 10.20.0.0/16 (see k8s/overlays/yandex/managed-data-egress.yaml)."
  }
}

variable "cluster_ipv4_range" {
  description = "Pod addresses."
  type        = string
  default     = "10.112.0.0/16"
}

variable "service_ipv4_range" {
  description = "Service (ClusterIP) addresses."
  type        = string
  default     = "10.96.0.0/16"
}

variable "api_allowed_cidrs" {
  description = "Addresses allowed to reach the Kubernetes API (your office, VPN or CI runners), e.g. [\"203.0.113.0/24\"]."
  type        = list(string)
}

# --- Kubernetes --------------------------------------------------------------------------------

variable "k8s_version" {
  description = "Kubernetes version of the master and the node group."
  type        = string
  default     = "1.32"
}

variable "node_platform_id" {
  description = "Compute platform of the nodes."
  type        = string
  default     = "standard-v3"
}

variable "node_cores" {
  description = "vCPUs per node (a training run asks for 2-4)."
  type        = number
  default     = 4
}

variable "node_memory_gb" {
  description = "Memory per node, GiB (a training run asks for 6-12)."
  type        = number
  default     = 16
}

variable "node_disk_gb" {
  description = "Boot disk per node, GiB (images with TensorFlow are large)."
  type        = number
  default     = 96
}

variable "node_min" {
  description = "Node group autoscaling: fewest nodes (per zone when multi_zone is true)."
  type        = number
  default     = 1
}

variable "node_max" {
  description = "Node group autoscaling: most nodes, per zone when multi_zone is true (serving HPA max 10 pods, plus training runs)."
  type        = number
  default     = 5
}

variable "node_initial" {
  description = "Node group autoscaling: nodes at creation (per zone when multi_zone is true)."
  type        = number
  default     = 2
}

# --- GPU node group (training) --------------------------------------------------------------------

variable "gpu_node_max" {
  description = "Most nodes of the GPU node group; 0 (the default) creates no GPU node group. The group scales from 0: a run pod that requests nvidia.com/gpu and tolerates the taint (docs/deployment.md, GPU training) starts a node."
  type        = number
  default     = 0

  validation {
    condition     = var.gpu_node_max >= 0 && var.gpu_node_max <= 8
    error_message = "gpu_node_max must be between 0 and 8."
  }
}

variable "gpu_zone" {
  description = "Zone of the GPU node group (GPU platforms exist in some zones only)."
  type        = string
  default     = "ru-central1-a"
}

variable "gpu_platform_id" {
  description = "Compute platform with GPUs (gpu-standard-v3: NVIDIA Ampere A100)."
  type        = string
  default     = "gpu-standard-v3"
}

variable "gpu_node_cores" {
  description = "vCPUs per GPU node (gpu-standard-v3 with one GPU: 28)."
  type        = number
  default     = 28
}

variable "gpu_node_memory_gb" {
  description = "Memory per GPU node, GiB (gpu-standard-v3 with one GPU: 119)."
  type        = number
  default     = 119
}

variable "gpu_node_gpus" {
  description = "GPUs per GPU node."
  type        = number
  default     = 1
}

# --- databases ---------------------------------------------------------------------------------

variable "postgresql_version" {
  description = "Managed PostgreSQL major version."
  type        = string
  default     = "16"
}

variable "postgresql_preset" {
  description = "Managed PostgreSQL host class."
  type        = string
  default     = "s2.micro"
}

variable "postgresql_disk_gb" {
  description = "Managed PostgreSQL disk, GiB."
  type        = number
  default     = 20
}

variable "pg_mlflow_password" {
  description = "Password of the PostgreSQL user mlflow (MLflow backend store). Pass via TF_VAR_pg_mlflow_password."
  type        = string
  sensitive   = true

  validation {
    condition     = length(var.pg_mlflow_password) >= 8
    error_message = "pg_mlflow_password needs at least 8 characters."
  }
}

variable "pg_dagster_password" {
  description = "Password of the PostgreSQL user dagster (Dagster instance storage). Pass via TF_VAR_pg_dagster_password."
  type        = string
  sensitive   = true

  validation {
    condition     = length(var.pg_dagster_password) >= 8
    error_message = "pg_dagster_password needs at least 8 characters."
  }
}

variable "redis_version" {
  description = "Managed Redis (Valkey-compatible) version."
  type        = string
  default     = "7.2"
}

variable "redis_preset" {
  description = "Managed Redis host class."
  type        = string
  default     = "hm3-c2-m8"
}

variable "redis_disk_gb" {
  description = "Managed Redis disk, GiB."
  type        = number
  default     = 16
}

variable "redis_password" {
  description = "Password of Managed Redis (8-128 characters). Pass via TF_VAR_redis_password."
  type        = string
  sensitive   = true

  validation {
    condition     = length(var.redis_password) >= 8 && length(var.redis_password) <= 128
    error_message = "redis_password needs 8 to 128 characters."
  }
}

# --- storage -----------------------------------------------------------------------------------

variable "models_bucket_name" {
  description = "Bucket for MLflow artifacts and Dagster compute logs (globally unique). Empty: <name_prefix>-models-<folder_id>."
  type        = string
  default     = ""
}

variable "data_bucket_name" {
  description = "Bucket for raw fish images (globally unique). Empty: <name_prefix>-data-<folder_id>."
  type        = string
  default     = ""
}
