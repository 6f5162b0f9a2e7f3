# Two PoPs on DigitalOcean: Amsterdam runs the control plane, ingest and an edge; New York adds a
# control node (the third Raft voter lives there too) and edges near its viewers.
#
#   export DIGITALOCEAN_TOKEN=...
#   terraform init && terraform apply -var domain=example.com -var 'ssh_key_ids=["..."]' -var 'admin_cidrs=["198.51.100.0/24"]'
#   cd ../../../ansible && BITRIVER_TERRAFORM_DIR=../terraform/examples/two-regions \
#     ansible-playbook -i inventory/terraform.py site.yml -e bitriver_package=...

terraform {
  required_version = ">= 1.5"
  required_providers {
    digitalocean = {
      source  = "digitalocean/digitalocean"
      version = "~> 2.40"
    }
  }
}

provider "digitalocean" {}

resource "digitalocean_domain" "fleet" {
  name = var.domain
}

module "ams" {
  source = "../../modules/pop"

  pop         = "ams"
  region      = "ams3"
  domain      = digitalocean_domain.fleet.name
  ssh_key_ids = var.ssh_key_ids
  admin_cidrs = var.admin_cidrs
  machines = {
    control = { count = 2, size = "s-2vcpu-4gb", roles = ["control"] }
    ingest  = { count = 1, size = "c-4", roles = ["ingest", "transcode", "origin"] }
    edge    = { count = 1, size = "s-2vcpu-4gb", roles = ["edge"] }
  }
}

module "nyc" {
  source = "../../modules/pop"

  pop         = "nyc"
  region      = "nyc3"
  domain      = digitalocean_domain.fleet.name
  ssh_key_ids = var.ssh_key_ids
  admin_cidrs = var.admin_cidrs
  machines = {
    control = { count = 1, size = "s-2vcpu-4gb", roles = ["control"] }
    edge    = { count = 2, size = "s-2vcpu-4gb", roles = ["edge"] }
  }
}
