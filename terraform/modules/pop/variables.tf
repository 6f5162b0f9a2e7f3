variable "pop" {
  description = "Name of the point of presence; the Ansible group is pop_<pop> and the DNS names are ingest.<pop>.<domain> and edge.<pop>.<domain>."
  type        = string
  validation {
    condition     = can(regex("^[a-z0-9-]{1,20}$", var.pop))
    error_message = "pop must be 1 to 20 of a-z, 0-9 and '-'."
  }
}

variable "region" {
  description = "DigitalOcean region slug the PoP's machines run in, e.g. ams3 or nyc3."
  type        = string
}

variable "bitriver_region" {
  description = "Region label the nodes report (BITRIVER_LIVE_REGION); defaults to the PoP name."
  type        = string
  default     = ""
}

variable "domain" {
  description = "DNS zone (a digitalocean_domain) that gets the PoP's ingest and edge records."
  type        = string
}

variable "machines" {
  description = "Machine groups of the PoP: how many, which size, and the BitRiver roles (control, ingest, transcode, origin, edge) each runs."
  type = map(object({
    count = number
    size  = string
    roles = list(string)
  }))
  validation {
    condition = alltrue([
      for group in values(var.machines) : length(group.roles) > 0 && alltrue([
        for role in group.roles : contains(["control", "ingest", "transcode", "origin", "edge"], role)
      ])
    ])
    error_message = "Each machine group needs one or more roles out of control, ingest, transcode, origin, edge."
  }
}

variable "image" {
  description = "Droplet image; the Ansible role and the Debian package target Debian 12."
  type        = string
  default     = "debian-12-x64"
}

variable "ssh_key_ids" {
  description = "DigitalOcean SSH key ids (or fingerprints) allowed to log in as root; Ansible uses them."
  type        = list(string)
  validation {
    condition     = length(var.ssh_key_ids) > 0
    error_message = "At least one SSH key is required: the machines have no password login."
  }
}

variable "admin_cidrs" {
  description = "Networks allowed to reach SSH and the nodes' /healthz and /metrics."
  type        = list(string)
  validation {
    condition     = length(var.admin_cidrs) > 0 && !contains(var.admin_cidrs, "0.0.0.0/0") && !contains(var.admin_cidrs, "::/0")
    error_message = "admin_cidrs must list the operators' networks, not the whole Internet."
  }
}

variable "fleet_tag" {
  description = "Tag every node of the fleet carries, in every PoP: the firewalls admit cluster traffic from it."
  type        = string
  default     = "bitriver"
}

variable "ports" {
  description = "Listener ports, matching the Ansible role's bitriver_*_port variables."
  type = object({
    http    = number
    cluster = number
    rtmp    = number
    srt     = number
    webrtc  = number
    edge    = number
  })
  default = {
    http    = 80
    cluster = 7946
    rtmp    = 1935
    srt     = 9000
    webrtc  = 8189
    edge    = 8081
  }
}
