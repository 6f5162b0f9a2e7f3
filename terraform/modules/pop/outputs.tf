output "pop" {
  description = "The PoP's name, region label and DNS names (ansible/inventory/terraform.py makes pop_<name> groups from it)."
  value = {
    name            = var.pop
    bitriver_region = local.bitriver_region
    ingest_fqdn     = "ingest.${var.pop}.${var.domain}"
    edge_fqdn       = "edge.${var.pop}.${var.domain}"
  }
}

output "hosts" {
  description = "One object per machine, the shape ansible/inventory/terraform.py reads."
  value = [
    for name, m in local.machines : {
      name         = digitalocean_droplet.node[name].name
      pop          = var.pop
      roles        = m.roles
      public_ipv4  = digitalocean_droplet.node[name].ipv4_address
      private_ipv4 = digitalocean_droplet.node[name].ipv4_address_private
      public_ipv6  = digitalocean_droplet.node[name].ipv6_address
    }
  ]
}
