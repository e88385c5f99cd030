locals {
  models_bucket = var.models_bucket_name != "" ? var.models_bucket_name : "${var.name_prefix}-models-${var.folder_id}"
  data_bucket   = var.data_bucket_name != "" ? var.data_bucket_name : "${var.name_prefix}-data-${var.folder_id}"
}

# MLflow artifacts (models) and Dagster compute logs.
resource "yandex_storage_bucket" "models" {
  bucket    = local.models_bucket
  folder_id = var.folder_id

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

  depends_on = [yandex_resourcemanager_folder_iam_member.roles]
}

# Raw fish photos (FISH_RAW_URI=s3://<bucket>/raw) watched by the Dagster sensor.
resource "yandex_storage_bucket" "data" {
  bucket    = local.data_bucket
  folder_id = var.folder_id

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

  depends_on = [yandex_resourcemanager_folder_iam_member.roles]
}

resource "yandex_container_registry" "main" {
  name      = var.name_prefix
  folder_id = var.folder_id
  labels    = local.labels
}
