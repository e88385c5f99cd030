locals {
  models_bucket = var.models_bucket_name != "" ? var.models_bucket_name : "${var.name_prefix}-models-${var.folder_id}"
  data_bucket   = var.data_bucket_name != "" ? var.data_bucket_name : "${var.name_prefix}-data-${var.folder_id}"
}

# MLflow artifacts (models). Access by bucket ACL, one grant per workload identity (iam.tf):
# WRITE lets it put and delete objects, not delete the bucket or change its settings.
resource "yandex_storage_bucket" "models" {
  bucket    = local.models_bucket
  folder_id = var.folder_id

  grant {
    id          = yandex_iam_service_account.mlflow.id
    type        = "CanonicalUser"
    permissions = ["READ", "WRITE"]
  }
  grant {
    id          = yandex_iam_service_account.dagster.id
    type        = "CanonicalUser"
    permissions = ["READ", "WRITE"]
  }
  grant {
    id          = yandex_iam_service_account.serving.id
    type        = "CanonicalUser"
    permissions = ["READ"]
  }

  anonymous_access_flags {
    read        = false
    list        = false
    config_read = false
  }

  versioning {
    enabled = true # a promoted model's files must survive an accidental overwrite
  }

  server_side_encryption_configuration {
    rule {
      apply_server_side_encryption_by_default {
        kms_master_key_id = yandex_kms_symmetric_key.main.id
        sse_algorithm     = "aws:kms"
      }
    }
  }

  lifecycle_rule {
    id      = "expire-old-versions"
    enabled = true
    noncurrent_version_expiration {
      days = 90
    }
  }

  tags = local.labels

  depends_on = [yandex_kms_symmetric_key_iam_binding.storage_accounts]
}

# Raw fish photos (FISH_RAW_URI=s3://<bucket>/raw) watched by the Dagster sensor, the durable
# platform state (FISH_DATA_URI=s3://<bucket>/platform) and the Dagster step logs.
resource "yandex_storage_bucket" "data" {
  bucket    = local.data_bucket
  folder_id = var.folder_id

  grant {
    id          = yandex_iam_service_account.dagster.id
    type        = "CanonicalUser"
    permissions = ["READ", "WRITE"]
  }

  anonymous_access_flags {
    read        = false
    list        = false
    config_read = false
  }

  versioning {
    enabled = true
  }

  server_side_encryption_configuration {
    rule {
      apply_server_side_encryption_by_default {
        kms_master_key_id = yandex_kms_symmetric_key.main.id
        sse_algorithm     = "aws:kms"
      }
    }
  }

  tags = local.labels

  depends_on = [yandex_kms_symmetric_key_iam_binding.storage_accounts]
}

resource "yandex_container_registry" "main" {
  name      = var.name_prefix
  folder_id = var.folder_id
  labels    = local.labels
}
