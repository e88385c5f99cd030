terraform {
  required_version = ">= 1.6.0"

  required_providers {
    yandex = {
      source  = "yandex-cloud/yandex"
      version = "~> 0.140"
    }
  }

  # Remote state in an Object Storage bucket through the S3 backend, configured at init time
  # (a partial backend configuration): copy backend.hcl.example to backend.hcl, fill in the
  # state bucket and run `terraform init -backend-config=backend.hcl` (docs/deployment.md).
  # For a first look with local state instead: cp local-state_override.tf.example
  # local-state_override.tf (git ignores *_override.tf), then `terraform init`.
  backend "s3" {}
}

# Authentication from the environment (YC_TOKEN, or YC_SERVICE_ACCOUNT_KEY_FILE), never from files here.
provider "yandex" {
  cloud_id  = var.cloud_id
  folder_id = var.folder_id
  zone      = var.zone
}
