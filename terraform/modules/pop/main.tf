# One PoP: machines per group (each with its roles), a firewall per group that opens exactly what
# its roles serve, and DNS names for the PoP's ingest and edge machines.

locals {
  bitriver_region = var.bitriver_region != "" ? var.bitriver_region : var.pop

  # One entry per machine: "<group>-<n>" => group settings.
  machines = merge([
    for group, spec in var.machines : {
      for n in range(spec.count) : "${group}-${n + 1}" => merge(spec, { group = group })
    }
  ]...)

  world = ["0.0.0.0/0", "::/0"]
}

resource "digitalocean_droplet" "node" {
  # checkov:skip=CKV_DIO_2: ssh_keys is set from var.ssh_key_ids, which is required and validated non-empty; checkov cannot resolve a variable that has no default.
  for_each = local.machines

  name       = "${var.pop}-${each.key}"
  region     = var.region
  size       = each.value.size
  image      = var.image
  ssh_keys   = var.ssh_key_ids
  ipv6       = true
  monitoring = true
  tags = concat(
    [var.fleet_tag, "${var.fleet_tag}-pop-${var.pop}", "${var.fleet_tag}-group-${var.pop}-${each.value.group}"],
    [for role in each.value.roles : "${var.fleet_tag}-role-${role}"],
  )
}

resource "digitalocean_firewall" "group" {
  for_each = var.machines

  name = "${var.fleet_tag}-${var.pop}-${each.key}"
  tags = ["${var.fleet_tag}-group-${var.pop}-${each.key}"]

  # SSH from the operators only.
  inbound_rule {
    protocol         = "tcp"
    port_range       = "22"
    source_addresses = var.admin_cidrs
  }

  # Raft and media between the nodes, in every PoP (QUIC over UDP).
  inbound_rule {
    protocol    = "udp"
    port_range  = tostring(var.ports.cluster)
    source_tags = [var.fleet_tag]
  }

  # HTTP: everyone on control nodes (API, web UI); the fleet (edges fetch from origins) and the
  # operators (/healthz, /metrics) elsewhere.
  inbound_rule {
    protocol         = "tcp"
    port_range       = tostring(var.ports.http)
    source_addresses = contains(each.value.roles, "control") ? local.world : var.admin_cidrs
    source_tags      = contains(each.value.roles, "control") ? null : [var.fleet_tag]
  }

  dynamic "inbound_rule" {
    for_each = contains(each.value.roles, "ingest") ? [{ protocol = "tcp", port = var.ports.rtmp }, { protocol = "udp", port = var.ports.srt }] : []
    content {
      protocol         = inbound_rule.value.protocol
      port_range       = tostring(inbound_rule.value.port)
      source_addresses = local.world
    }
  }

  # WebRTC media: WHIP publishers on ingest nodes, WHEP viewers on origins.
  dynamic "inbound_rule" {
    for_each = contains(each.value.roles, "ingest") || contains(each.value.roles, "origin") ? [var.ports.webrtc] : []
    content {
      protocol         = "udp"
      port_range       = tostring(inbound_rule.value)
      source_addresses = local.world
    }
  }

  dynamic "inbound_rule" {
    for_each = contains(each.value.roles, "edge") ? [var.ports.edge] : []
    content {
      protocol         = "tcp"
      port_range       = tostring(inbound_rule.value)
      source_addresses = local.world
    }
  }

  inbound_rule {
    protocol         = "icmp"
    source_addresses = local.world
  }

  # Outbound: package mirrors, other PoPs, DNS.
  outbound_rule {
    protocol              = "tcp"
    port_range            = "1-65535"
    destination_addresses = local.world
  }
  outbound_rule {
    protocol              = "udp"
    port_range            = "1-65535"
    destination_addresses = local.world
  }
  outbound_rule {
    protocol              = "icmp"
    destination_addresses = local.world
  }
}

# ingest.<pop>.<domain> and edge.<pop>.<domain>: one A and one AAAA record per machine of the role,
# so broadcasters and viewers are spread over the PoP's machines.
resource "digitalocean_record" "ingest_a" {
  for_each = { for name, m in local.machines : name => m if contains(m.roles, "ingest") }

  domain = var.domain
  type   = "A"
  name   = "ingest.${var.pop}"
  value  = digitalocean_droplet.node[each.key].ipv4_address
  ttl    = 60
}

resource "digitalocean_record" "ingest_aaaa" {
  for_each = { for name, m in local.machines : name => m if contains(m.roles, "ingest") }

  domain = var.domain
  type   = "AAAA"
  name   = "ingest.${var.pop}"
  value  = digitalocean_droplet.node[each.key].ipv6_address
  ttl    = 60
}

resource "digitalocean_record" "edge_a" {
  for_each = { for name, m in local.machines : name => m if contains(m.roles, "edge") }

  domain = var.domain
  type   = "A"
  name   = "edge.${var.pop}"
  value  = digitalocean_droplet.node[each.key].ipv4_address
  ttl    = 60
}

resource "digitalocean_record" "edge_aaaa" {
  for_each = { for name, m in local.machines : name => m if contains(m.roles, "edge") }

  domain = var.domain
  type   = "AAAA"
  name   = "edge.${var.pop}"
  value  = digitalocean_droplet.node[each.key].ipv6_address
  ttl    = 60
}
