# --- Managed PostgreSQL: databases "mlflow" (MLflow backend store) and "dagster" ------------------

resource "yandex_mdb_postgresql_cluster" "main" {
  name                = "${var.name_prefix}-pg"
  description         = "MLflow backend store and Dagster instance storage"
  environment         = "PRODUCTION"
  network_id          = yandex_vpc_network.main.id
  security_group_ids  = [yandex_vpc_security_group.data.id]
  deletion_protection = true
  labels              = local.labels

  config {
    version = var.postgresql_version

    resources {
      resource_preset_id = var.postgresql_preset
      disk_type_id       = "network-ssd"
      disk_size          = var.postgresql_disk_gb
    }

    backup_retain_period_days = 7
    backup_window_start {
      hours   = 1
      minutes = 0
    }

    access {
      web_sql   = false
      data_lens = false
    }
  }

  # One host per zone: with multi_zone the cluster keeps a primary when a zone is lost (the
  # .rw. host name follows the primary).
  dynamic "host" {
    for_each = local.zones
    content {
      zone             = host.value
      subnet_id        = yandex_vpc_subnet.data[host.value].id
      assign_public_ip = false
    }
  }

  maintenance_window {
    type = "WEEKLY"
    day  = "SUN"
    hour = 4
  }
}

resource "yandex_mdb_postgresql_user" "mlflow" {
  cluster_id = yandex_mdb_postgresql_cluster.main.id
  name       = "mlflow"
  password   = var.pg_mlflow_password
  conn_limit = 50
}

resource "yandex_mdb_postgresql_user" "dagster" {
  cluster_id = yandex_mdb_postgresql_cluster.main.id
  name       = "dagster"
  password   = var.pg_dagster_password
  conn_limit = 100
}

resource "yandex_mdb_postgresql_database" "mlflow" {
  cluster_id = yandex_mdb_postgresql_cluster.main.id
  name       = "mlflow"
  owner      = yandex_mdb_postgresql_user.mlflow.name
}

resource "yandex_mdb_postgresql_database" "dagster" {
  cluster_id = yandex_mdb_postgresql_cluster.main.id
  name       = "dagster"
  owner      = yandex_mdb_postgresql_user.dagster.name
}

# --- Managed Redis: the prediction cache ---------------------------------------------------------

resource "yandex_mdb_redis_cluster" "cache" {
  name                = "${var.name_prefix}-redis"
  description         = "Prediction cache of the fish classifier service"
  environment         = "PRODUCTION"
  network_id          = yandex_vpc_network.main.id
  security_group_ids  = [yandex_vpc_security_group.data.id]
  tls_enabled         = true
  persistence_mode    = "OFF" # a cache: nothing to keep across restarts
  deletion_protection = false
  labels              = local.labels

  config {
    version          = var.redis_version
    password         = var.redis_password
    maxmemory_policy = "ALLKEYS_LRU"
  }

  resources {
    resource_preset_id = var.redis_preset
    disk_size          = var.redis_disk_gb
  }

  dynamic "host" {
    for_each = local.zones
    content {
      zone             = host.value
      subnet_id        = yandex_vpc_subnet.data[host.value].id
      assign_public_ip = false
    }
  }

  maintenance_window {
    type = "WEEKLY"
    day  = "SUN"
    hour = 5
  }
}
