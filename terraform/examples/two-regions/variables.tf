variable "domain" {
  description = "DNS zone for the fleet; each PoP gets ingest.<pop> and edge.<pop> records in it."
  type        = string
}

variable "ssh_key_ids" {
  description = "DigitalOcean SSH key ids or fingerprints for root logins (Ansible)."
  type        = list(string)
}

variable "admin_cidrs" {
  description = "Operators' networks: SSH, /healthz and /metrics."
  type        = list(string)
}
