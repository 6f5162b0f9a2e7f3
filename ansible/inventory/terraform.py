#!/usr/bin/env python3
"""Ansible inventory from Terraform: `ansible-playbook -i inventory/terraform.py site.yml`.

Reads `terraform output -json` of the root module in $BITRIVER_TERRAFORM_DIR (default
../terraform/examples/two-regions, relative to ansible/), or a saved copy of it from
$BITRIVER_TERRAFORM_OUTPUT. It needs two outputs (see terraform/modules/pop/outputs.tf):

  bitriver_pops:  {NAME: {name, bitriver_region, ingest_fqdn, edge_fqdn}}
  bitriver_hosts: [{name, pop, roles, public_ipv4, private_ipv4, public_ipv6}]

and makes the groups the bitriver role expects: `bitriver` (every host), `pop_NAME` (with
bitriver_region) and one group per role. Hosts are reached and listen on their public IPv4
address (nodes talk across PoPs). Anything missing or unknown stops with a message naming it.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

ROLES = ("control", "ingest", "transcode", "origin", "edge")
HOST_KEYS = ("name", "pop", "roles", "public_ipv4", "private_ipv4", "public_ipv6")
POP_KEYS = ("name", "bitriver_region", "ingest_fqdn", "edge_fqdn")


class InventoryError(Exception):
    pass


def terraform_output():
    saved = os.environ.get("BITRIVER_TERRAFORM_OUTPUT")
    if saved:
        return json.loads(Path(saved).read_text())
    default = Path(__file__).resolve().parents[2] / "terraform" / "examples" / "two-regions"
    tf_dir = os.environ.get("BITRIVER_TERRAFORM_DIR", str(default))
    try:
        out = subprocess.run(["terraform", f"-chdir={tf_dir}", "output", "-json"], capture_output=True, text=True,
                             check=True)
    except FileNotFoundError:
        raise InventoryError("terraform is not installed (or set BITRIVER_TERRAFORM_OUTPUT to a saved "
                             "`terraform output -json`)") from None
    except subprocess.CalledProcessError as e:
        raise InventoryError(f"terraform output -json in {tf_dir} failed: {e.stderr.strip()}") from None
    return json.loads(out.stdout)


def output_value(outputs, name):
    if name not in outputs or "value" not in outputs[name]:
        raise InventoryError(f"terraform output {name} is missing (have: {', '.join(sorted(outputs)) or 'none'})")
    return outputs[name]["value"]


def build(outputs):
    pops = output_value(outputs, "bitriver_pops")
    hosts = output_value(outputs, "bitriver_hosts")
    inventory = {
        "_meta": {"hostvars": {}},
        "all": {"children": ["bitriver"]},
        "bitriver": {"children": []},
    }
    for name, pop in sorted(pops.items()):
        missing = [k for k in POP_KEYS if k not in pop]
        if missing:
            raise InventoryError(f"PoP {name}: missing {', '.join(missing)} in bitriver_pops")
        group = f"pop_{name}"
        inventory[group] = {
            "hosts": [],
            "vars": {
                "bitriver_region": pop["bitriver_region"],
                "bitriver_ingest_fqdn": pop["ingest_fqdn"],
                "bitriver_edge_fqdn": pop["edge_fqdn"],
            },
        }
        inventory["bitriver"]["children"].append(group)
    for role in ROLES:
        inventory[role] = {"hosts": []}
        inventory["bitriver"]["children"].append(role)
    for host in hosts:
        missing = [k for k in HOST_KEYS if k not in host]
        if missing:
            raise InventoryError(f"host {host.get('name', '?')}: missing {', '.join(missing)} in bitriver_hosts")
        name = host["name"]
        if host["pop"] not in pops:
            raise InventoryError(f"host {name}: PoP {host['pop']} is not in bitriver_pops")
        unknown = [r for r in host["roles"] if r not in ROLES]
        if unknown or not host["roles"]:
            raise InventoryError(f"host {name}: unknown role {', '.join(unknown)}" if unknown else f"host {name}: no role")
        inventory[f"pop_{host['pop']}"]["hosts"].append(name)
        for role in host["roles"]:
            inventory[role]["hosts"].append(name)
        inventory["_meta"]["hostvars"][name] = {
            "ansible_host": host["public_ipv4"],
            "ansible_user": "root",
            "bitriver_listen_ip": host["public_ipv4"],
            "bitriver_private_ipv4": host["private_ipv4"],
            "bitriver_public_ipv6": host["public_ipv6"],
        }
    return inventory


def main(argv):
    try:
        inventory = build(terraform_output())
    except InventoryError as e:
        print(f"terraform inventory: {e}", file=sys.stderr)
        return 1
    if len(argv) > 2 and argv[1] == "--host":
        print(json.dumps(inventory["_meta"]["hostvars"].get(argv[2], {})))
    else:
        print(json.dumps(inventory, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
