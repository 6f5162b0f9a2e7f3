# ansible/inventory/terraform.py reads these two outputs from `terraform output -json`.

output "bitriver_pops" {
  description = "PoPs by name: region label and DNS names."
  value       = { for pop in [module.ams.pop, module.nyc.pop] : pop.name => pop }
}

output "bitriver_hosts" {
  description = "Every machine of the fleet with its PoP, roles and addresses."
  value       = concat(module.ams.hosts, module.nyc.hosts)
}
