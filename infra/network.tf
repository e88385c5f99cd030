locals {
  labels = {
    project = "fish-platform"
    managed = "terraform"
  }
  # Yandex Network Load Balancer health checks come from these ranges.
  lb_healthcheck_cidrs = ["198.18.235.0/24", "198.18.248.0/24"]

  # One zone, or three (var.multi_zone): a /24 per zone from each range, by the zone's position.
  zones = var.multi_zone ? var.zones : [var.zone]
  zone_subnets = {
    for index, zone in local.zones : zone => {
      k8s  = cidrsubnet(var.k8s_subnet_cidr, 8, index)
      data = cidrsubnet(var.data_subnet_cidr, 8, index)
    }
  }
}

resource "yandex_vpc_network" "main" {
  name   = "${var.name_prefix}-net"
  labels = local.labels
}

# Nodes have no public addresses; they reach registries (Docker Hub, cr.yandex) through NAT.
resource "yandex_vpc_gateway" "nat" {
  name = "${var.name_prefix}-nat"
  shared_egress_gateway {}
}

resource "yandex_vpc_route_table" "nat" {
  name       = "${var.name_prefix}-nat"
  network_id = yandex_vpc_network.main.id

  static_route {
    destination_prefix = "0.0.0.0/0"
    gateway_id         = yandex_vpc_gateway.nat.id
  }
}

resource "yandex_vpc_subnet" "k8s" {
  for_each       = local.zone_subnets
  name           = "${var.name_prefix}-k8s-${each.key}"
  zone           = each.key
  network_id     = yandex_vpc_network.main.id
  v4_cidr_blocks = [each.value.k8s]
  route_table_id = yandex_vpc_route_table.nat.id
  labels         = local.labels
}

resource "yandex_vpc_subnet" "data" {
  for_each       = local.zone_subnets
  name           = "${var.name_prefix}-data-${each.key}"
  zone           = each.key
  network_id     = yandex_vpc_network.main.id
  v4_cidr_blocks = [each.value.data]
  labels         = local.labels
}

# --- security groups ---------------------------------------------------------------------------

# Master and nodes: traffic inside the cluster, load balancer health checks, the API from the
# allowed ranges, HTTP(S) to the ingress controller, and egress for image pulls.
resource "yandex_vpc_security_group" "k8s" {
  name       = "${var.name_prefix}-k8s"
  network_id = yandex_vpc_network.main.id
  labels     = local.labels

  # (checkov's CKV_YC_19 reads the first ingress rule only; keep a CIDR rule first.)
  ingress {
    description    = "Pod and service networks"
    protocol       = "ANY"
    v4_cidr_blocks = [var.cluster_ipv4_range, var.service_ipv4_range]
    from_port      = 0
    to_port        = 65535
  }

  ingress {
    description       = "Traffic between master and nodes (same group)"
    protocol          = "ANY"
    predefined_target = "self_security_group"
    from_port         = 0
    to_port           = 65535
  }

  ingress {
    description    = "Network Load Balancer health checks"
    protocol       = "TCP"
    v4_cidr_blocks = local.lb_healthcheck_cidrs
    from_port      = 0
    to_port        = 65535
  }

  ingress {
    description    = "ICMP inside the VPC (path MTU discovery, diagnostics)"
    protocol       = "ICMP"
    v4_cidr_blocks = [var.k8s_subnet_cidr, var.data_subnet_cidr]
  }

  ingress {
    description    = "Kubernetes API from the allowed ranges"
    protocol       = "TCP"
    v4_cidr_blocks = var.api_allowed_cidrs
    port           = 443
  }

  ingress {
    description    = "Kubernetes API (alternate port) from the allowed ranges"
    protocol       = "TCP"
    v4_cidr_blocks = var.api_allowed_cidrs
    port           = 6443
  }

  ingress {
    description    = "HTTP to the ingress controller's load balancer (NodePorts)"
    protocol       = "TCP"
    v4_cidr_blocks = ["0.0.0.0/0"]
    from_port      = 30000
    to_port        = 32767
  }

  egress {
    description    = "Image pulls, Object Storage, Yandex APIs, managed databases"
    protocol       = "ANY"
    v4_cidr_blocks = ["0.0.0.0/0"]
    from_port      = 0
    to_port        = 65535
  }
}

# Managed PostgreSQL and Redis: reachable only from the Kubernetes nodes and pods.
resource "yandex_vpc_security_group" "data" {
  name       = "${var.name_prefix}-data"
  network_id = yandex_vpc_network.main.id
  labels     = local.labels

  ingress {
    description    = "PostgreSQL (connection pooler) from nodes and pods"
    protocol       = "TCP"
    v4_cidr_blocks = [var.k8s_subnet_cidr, var.cluster_ipv4_range]
    port           = 6432
  }

  ingress {
    description    = "Redis over TLS from nodes and pods"
    protocol       = "TCP"
    v4_cidr_blocks = [var.k8s_subnet_cidr, var.cluster_ipv4_range]
    port           = 6380
  }
}
