#!/usr/bin/env python3
"""Static checks of terraform/ (no terraform binary or provider registry is reachable here).

1. Every .tf file parses (python-hcl2).
2. Every `var.X` a module uses is declared in it; every module call passes only declared
   variables and every variable without a default.
3. The root example's outputs are exactly the ones ansible/inventory/terraform.py reads, and the
   objects the PoP module outputs have exactly the keys it expects; a fixture of
   `terraform output -json` in that shape turns into the groups the bitriver role needs, and
   ansible-inventory accepts it.
4. checkov finds no failed check.

Exit status 0 when all pass; failures are printed one per line.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import hcl2

ROOT = Path(__file__).resolve().parents[2]
TF = ROOT / "terraform"
ANSIBLE = ROOT / "ansible"
FIXTURE = ANSIBLE / "inventory" / "fixtures" / "terraform-output.json"
META_ARGS = {"source", "version", "providers", "count", "for_each", "depends_on"}

sys.path.insert(0, str(ANSIBLE / "inventory"))
import terraform as inventory_script  # noqa: E402 - the script under test

failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)


def load_dir(path):
    blocks = {}
    for f in sorted(path.glob("*.tf")):
        try:
            with f.open() as fh:
                doc = hcl2.load(fh)
        except Exception as e:  # noqa: BLE001 - any parse error is a failure to report
            failures.append(f"{f.relative_to(ROOT)}: does not parse: {e}")
            continue
        for kind, items in doc.items():
            blocks.setdefault(kind, []).extend(items)
        blocks.setdefault("_text", []).append(f.read_text())
    return blocks


def unquote(value):
    """python-hcl2 keeps the quotes of labels and string literals: `"ams"`."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def labelled(blocks, kind):
    out = {}
    for item in blocks.get(kind, []):
        for name, body in item.items():
            out[unquote(name)] = body
    return out


def variables(blocks):
    return labelled(blocks, "variable")


def outputs(blocks):
    return labelled(blocks, "output")


def used_vars(blocks):
    return set(re.findall(r"\bvar\.([A-Za-z_][A-Za-z0-9_]*)", "\n".join(blocks.get("_text", []))))


def object_keys(expr):
    """Keys of an object output: a parsed object, or the innermost `{ ... }` of a `for` expression."""
    if isinstance(expr, dict):
        return {unquote(k) for k in expr if not k.startswith("__")}
    inner = re.findall(r"\{([^{}]*)\}", str(expr))
    return set(re.findall(r"\b([a-z_0-9]+)\s*=", inner[-1])) if inner else set()


def main():
    dirs = sorted({p.parent for p in TF.rglob("*.tf")})
    check(dirs, "no .tf files under terraform/")
    parsed = {d: load_dir(d) for d in dirs}
    print(f"parsed {sum(len(list(d.glob('*.tf'))) for d in dirs)} files in {len(dirs)} modules")

    for d, blocks in parsed.items():
        declared = variables(blocks)
        for name in sorted(used_vars(blocks) - set(declared)):
            failures.append(f"{d.relative_to(ROOT)}: var.{name} is used but not declared")
        for call, args in labelled(blocks, "module").items():
            src = (d / unquote(args["source"])).resolve()
            if src not in parsed:
                failures.append(f"{d.relative_to(ROOT)}: module {call}: source {args['source']} has no .tf files")
                continue
            wanted = variables(parsed[src])
            given = {k for k in args if not k.startswith("__")} - META_ARGS
            for name in sorted(given - set(wanted)):
                failures.append(f"module {call}: passes {name}, which {src.relative_to(ROOT)} does not declare")
            for name, body in wanted.items():
                if "default" not in body and name not in given:
                    failures.append(f"module {call}: required variable {name} is not given")

    # What the Ansible inventory script reads lines up with what Terraform outputs.
    root = parsed.get(TF / "examples" / "two-regions")
    pop_module = parsed.get(TF / "modules" / "pop")
    check(root is not None and pop_module is not None, "terraform/examples/two-regions or modules/pop is missing")
    if root and pop_module:
        root_outputs = set(outputs(root))
        fixture = json.loads(FIXTURE.read_text())
        check(root_outputs == {"bitriver_pops", "bitriver_hosts"},
              f"root outputs {sorted(root_outputs)} are not the two the inventory script reads")
        check(set(fixture) == root_outputs, f"fixture outputs {sorted(fixture)} differ from {sorted(root_outputs)}")
        module_outputs = outputs(pop_module)
        host_keys = object_keys(module_outputs.get("hosts", {}).get("value"))
        pop_keys = object_keys(module_outputs.get("pop", {}).get("value"))
        check(host_keys == set(inventory_script.HOST_KEYS),
              f"module hosts output keys {sorted(host_keys)} != inventory's {sorted(inventory_script.HOST_KEYS)}")
        check(pop_keys == set(inventory_script.POP_KEYS),
              f"module pop output keys {sorted(pop_keys)} != inventory's {sorted(inventory_script.POP_KEYS)}")
        for host in fixture["bitriver_hosts"]["value"]:
            check(set(host) == host_keys, f"fixture host {host.get('name')} keys {sorted(host)} != {sorted(host_keys)}")
        for name, pop in fixture["bitriver_pops"]["value"].items():
            check(set(pop) == pop_keys, f"fixture PoP {name} keys {sorted(pop)} != {sorted(pop_keys)}")

        inv = inventory_script.build(fixture)
        for name, pop in fixture["bitriver_pops"]["value"].items():
            group = inv.get(f"pop_{name}", {})
            check(group.get("vars", {}).get("bitriver_region") == pop["bitriver_region"],
                  f"group pop_{name} lacks bitriver_region {pop['bitriver_region']}")
        for host in fixture["bitriver_hosts"]["value"]:
            check(host["name"] in inv[f"pop_{host['pop']}"]["hosts"], f"{host['name']} is not in pop_{host['pop']}")
            for role in host["roles"]:
                check(host["name"] in inv[role]["hosts"], f"{host['name']} is not in group {role}")
        # A broken output is refused with a message naming what is wrong.
        broken = json.loads(json.dumps(fixture))
        broken["bitriver_hosts"]["value"][0]["roles"] = ["relay"]
        try:
            inventory_script.build(broken)
            failures.append("an unknown role in the Terraform output was accepted")
        except inventory_script.InventoryError as e:
            check("unknown role relay" in str(e), f"unclear error for an unknown role: {e}")

        env = dict(os.environ, BITRIVER_TERRAFORM_OUTPUT=str(FIXTURE), ANSIBLE_CONFIG=str(ANSIBLE / "ansible.cfg"))
        proc = subprocess.run(["ansible-inventory", "-i", "inventory/terraform.py", "--graph"], cwd=ANSIBLE, env=env,
                              capture_output=True, text=True)
        check(proc.returncode == 0 and "@pop_nyc:" in proc.stdout and "nyc-edge-2" in proc.stdout,
              f"ansible-inventory does not accept the Terraform inventory:\n{proc.stdout}{proc.stderr}")
        proc = subprocess.run(["ansible-playbook", "-i", "inventory/terraform.py", "site.yml", "--list-hosts"],
                              cwd=ANSIBLE, env=env, capture_output=True, text=True)
        check(proc.returncode == 0 and "ams-ingest-1" in proc.stdout,
              f"site.yml --list-hosts with the Terraform inventory failed:\n{proc.stdout}{proc.stderr}")

    checkov = os.environ.get("BITRIVER_CHECKOV", "checkov")
    proc = subprocess.run([checkov, "-d", str(TF), "--framework", "terraform", "--compact", "--quiet",
                           "--download-external-modules", "false", "--skip-download", "-o", "cli"], capture_output=True, text=True)
    summary = re.findall(r"Passed checks: \d+, Failed checks: \d+, Skipped checks: \d+", proc.stdout)
    print("checkov:", "; ".join(summary) or proc.stdout[-2000:])
    check(proc.returncode == 0, f"checkov reports failed checks:\n{proc.stdout[-6000:]}{proc.stderr[-2000:]}")

    for f in failures:
        print(f"FAIL: {f}")
    print("terraform checks:", "FAILED" if failures else "ok")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
