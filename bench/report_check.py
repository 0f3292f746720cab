#!/usr/bin/python3
"""bench/report_check.py DIR: checks that bench/run's outputs in DIR are well formed (the CI smoke
test bench_quick_smoke). Never looks at how fast anything was. Exit 0 = well formed."""
import json
import os
import sys

out = sys.argv[1]
errors = []


def err(msg):
    errors.append(msg)


try:
    with open(os.path.join(out, "results.json")) as f:
        doc = json.load(f, parse_constant=lambda c: err(f"results.json: non-JSON constant {c}"))
except (OSError, ValueError) as e:
    print(f"report_check: results.json: {e}")
    sys.exit(1)

if doc.get("schema") != "vessel-bench/1":
    err(f"schema is {doc.get('schema')!r}, not 'vessel-bench/1'")
host = doc.get("host", {})
for k in ("platform", "cpus", "memory_mib", "date"):
    if k not in host:
        err(f"host.{k} missing")
if host.get("platform") not in ("hardware KVM", "kvm_pvm (software nested KVM)", "none"):
    err(f"host.platform {host.get('platform')!r} is not one of the three")
benchmarks = doc.get("benchmarks", [])
if not benchmarks:
    err("no benchmarks listed")
for b in benchmarks:
    if b.get("status") not in ("ok", "failed", "skipped"):
        err(f"benchmark {b.get('name')}: status {b.get('status')!r}")
    if b.get("status") != "ok" and not b.get("reason"):
        err(f"benchmark {b.get('name')}: {b.get('status')} without a reason")
if not any(b.get("status") == "ok" for b in benchmarks):
    err("no benchmark ran")
results = doc.get("results", [])
if not results:
    err("no results")
names = set()
for r in results:
    n = r.get("name", "?")
    if n in names:
        err(f"{n}: duplicate name")
    names.add(n)
    for k, t in (("name", str), ("benchmark", str), ("unit", str), ("platform", str), ("vm", bool),
                 ("repetitions", int), ("min", (int, float)), ("median", (int, float)), ("max", (int, float))):
        if not isinstance(r.get(k), t) or isinstance(r.get(k), bool) != (t is bool):
            err(f"{n}: {k} is {r.get(k)!r}")
    for k in ("vcpus", "memory_mib"):
        if k not in r:
            err(f"{n}: {k} missing")
    if all(isinstance(r.get(k), (int, float)) for k in ("min", "median", "max")):
        if not r["min"] <= r["median"] <= r["max"]:
            err(f"{n}: min/median/max out of order")
    if isinstance(r.get("repetitions"), int) and r["repetitions"] < 1:
        err(f"{n}: repetitions {r['repetitions']}")
    if "samples" in r and len(r["samples"]) != r.get("repetitions"):
        err(f"{n}: {len(r['samples'])} samples for {r.get('repetitions')} repetitions")
    if ("ratio" in r) != ("ratio_to" in r):
        err(f"{n}: ratio without ratio_to or the reverse")
    if "ratio_to" in r and r["ratio_to"] not in {x.get("name") for x in results}:
        err(f"{n}: ratio_to {r['ratio_to']} is not a result")
ran = {b["name"] for b in benchmarks if b.get("status") == "ok"}
for b in ran:
    if not any(r.get("benchmark") == b for r in results):
        err(f"benchmark {b} ran but produced no result")

try:
    with open(os.path.join(out, "results.md")) as f:
        md = f.read()
    if not md.startswith("# vessel benchmarks") or "| figure | median |" not in md:
        err("results.md lacks its title or tables")
except OSError as e:
    err(f"results.md: {e}")

pngs = [p for p in os.listdir(out) if p.endswith(".png")]
if not pngs:
    err("no PNG plots")
for p in pngs:
    with open(os.path.join(out, p), "rb") as f:
        if f.read(8) != b"\x89PNG\r\n\x1a\n":
            err(f"{p} is not a PNG")

if errors:
    print("report_check: " + "\nreport_check: ".join(errors))
    sys.exit(1)
print(f"report_check: well formed: {len(results)} results from {len(ran)} benchmarks, "
      f"{len(benchmarks) - len(ran)} skipped/failed, {len(pngs)} plots")
