terraform {
  required_version = ">= 1.6.0"

  required_providers {
    yandex = {
      source  = "yandex-cloud/yandex"
      version = "~> 0.140"
    }
  }

  # Keep state out of git and off laptops: an Object Storage bucket (created once by hand,
  # docs/deployment.md) through the S3 backend. Left commented so `terraform init` works
  # without it for a first look:
  # backend "s3" {
  #   endpoints = { s3 = "https://storage.yandexcloud.net" }
  #   bucket    = "<your-state-bucket>"
  #   key       = "fish-platform/terraform.tfstate"
  #   region    = "ru-central1"
  #   skip_region_validation      = true
  #   skip_credentials_validation = true
  #   skip_requesting_account_id  = true
  #   skip_s3_checksum            = true
  # }
}

# Authentication from the environment (YC_TOKEN, or YC_SERVICE_ACCOUNT_KEY_FILE), never from files here.
provider "yandex" {
  cloud_id  = var.cloud_id
  folder_id = var.folder_id
  zone      = var.zone
}
