#!/usr/bin/python3
"""bench/report.py DIR: turns bench/run's raw outputs (DIR/raw/) into DIR/results.json,
DIR/results.md and DIR/*.png (matplotlib, Debian's python3-matplotlib).

results.json (schema "vessel-bench/1"):
  host        platform ("hardware KVM" | "kvm_pvm (software nested KVM)" | "none"), cpus,
              memory_mib, kernel, cpu_model, date, load before/after, quick, git, seconds
  benchmarks  one entry per benchmark: name, status (ok | failed | skipped), seconds, reason
  results     one entry per figure:
                name         "<benchmark>.<what>" (unique)
                benchmark    which benchmark produced it
                unit         ns | us | ms | s | MiB | MiB/s | ops/s | calls/s | sandboxes/s | x ...
                platform     where it ran (the guest's platform for figures that run a VM)
                vm           true when the figure includes a guest VM (then vcpus/memory_mib are
                             the guest's), false for host-side code (then they are the host's)
                vcpus, memory_mib
                repetitions  how many samples min/median/max are taken from
                min, median, max
                samples      the samples, where there are several
                ratio_to, ratio   for comparisons: the figure it is compared with, measured in the
                             same run, and median / that figure's median
                target       {"text", "op", "value", "unit", "hardware_kvm_only", "met"} where issue
                             11 sets one; met is null when it does not apply to this platform
                description  how it is measured
"""
import json
import math
import os
import re
import statistics
import sys

OUT = sys.argv[1]
RAW = os.path.join(OUT, "raw")


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


host = load_json(os.path.join(RAW, "host.json")) or {}
end = read(os.path.join(RAW, "end.txt")).split('"')
if len(end) >= 3:
    host["load_after"] = end[1]
    try:
        host["seconds"] = int(end[2].strip())
    except ValueError:
        pass
PLATFORM = host.get("platform", "unknown")
HW = PLATFORM == "hardware KVM"
benchmarks = []
for line in read(os.path.join(RAW, "status.jsonl")).splitlines():
    if line.strip():
        benchmarks.append(json.loads(line))

results = []


def clean(x):
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return None
    return x


def add(name, bench, unit, samples, vm=False, vcpus=None, memory_mib=None, platform=None,
        description="", **extra):
    samples = [clean(float(s)) for s in samples]
    samples = [s for s in samples if s is not None]
    if not samples:
        return None
    r = {
        "name": name, "benchmark": bench, "unit": unit, "platform": platform or PLATFORM, "vm": vm,
        # Host-side figures carry the host's shape; a VM's unknown shape stays null.
        "vcpus": vcpus if vcpus is not None or vm else host.get("cpus"),
        "memory_mib": memory_mib if memory_mib is not None or vm else host.get("memory_mib"),
        "repetitions": len(samples), "min": min(samples), "median": statistics.median(samples),
        "max": max(samples),
    }
    if len(samples) > 1:
        r["samples"] = samples
    if description:
        r["description"] = description
    r.update(extra)
    results.append(r)
    return r


def find(name):
    for r in results:
        if r["name"] == name:
            return r
    return None


def ratio(name, to):
    a, b = find(name), find(to)
    if a and b and b["median"]:
        a["ratio_to"] = to
        a["ratio"] = a["median"] / b["median"]


def target(name, text, op, value, unit, hardware_kvm_only, key="median"):
    r = find(name)
    if not r:
        return
    v = r[key] if key == "median" else r.get(key)
    met = None
    if v is not None and (HW or not hardware_kvm_only):
        met = v <= value if op == "<=" else v >= value
    r["target"] = {"text": text, "op": op, "value": value, "unit": unit,
                   "hardware_kvm_only": hardware_kvm_only, "met": met, "compared": key}


# ---- Google Benchmark JSON ------------------------------------------------------------------
STD = {"name", "family_index", "per_family_instance_index", "run_name", "run_type", "repetitions",
       "repetition_index", "threads", "iterations", "real_time", "cpu_time", "time_unit", "label",
       "error_occurred", "error_message", "aggregate_name", "aggregate_unit"}
# The VM a benchmark's figures describe (others are host-side code: host CPUs/memory).
VM_SHAPE = {"vmm.BM_CreateToFirstKvmRun": (1, 128), "vmm.BM_VmmRssOverhead": (1, 128)}


def counter_unit(key):
    for suffix, unit in (("_us", "us"), ("_ms", "ms"), ("_ns", "ns"), ("_kib", "KiB"),
                         ("_mib", "MiB"), ("per_s", "/s"), ("_per_call", "per call")):
        if key.endswith(suffix):
            return unit
    if key == "bytes_per_second":
        return "MiB/s"
    if key == "items_per_second":
        return "items/s"
    return ""


gb_samples = {}  # bench -> {run_name: [real_time in us]} for the distribution plots
for st in benchmarks:
    bench = st["name"]
    data = load_json(os.path.join(RAW, bench + ".json"))
    if not data or "benchmarks" not in data:
        continue
    runs = {}
    for b in data["benchmarks"]:
        if b.get("run_type") != "iteration" or b.get("error_occurred"):
            continue
        runs.setdefault(b["run_name"], []).append(b)
    for run_name, reps in runs.items():
        short = re.sub(r"/(iterations:\d+|real_time|manual_time)", "", run_name)
        base = f"{bench}.{short}"
        family = f"{bench}.{short.split('/')[0]}"
        vm = family in VM_SHAPE
        vcpus, mem = VM_SHAPE.get(family, (None, None))
        label = reps[0].get("label", "")
        plat = label if label and ("KVM" in label or "kvm" in label) else None
        unit = reps[0].get("time_unit", "ns")
        common = dict(vm=vm, vcpus=vcpus, memory_mib=mem, platform=plat)
        r = add(base, bench, unit, [x["real_time"] for x in reps],
                description="wall time per iteration (Google Benchmark real_time"
                + (", manual" if "manual_time" in run_name else "") + ")", **common)
        if r:
            scale = {"ns": 1e-3, "us": 1, "ms": 1e3, "s": 1e6}.get(unit, 1)
            gb_samples.setdefault(bench, {})[short] = [x["real_time"] * scale for x in reps]
        add(base + ":cpu", bench, unit, [x["cpu_time"] for x in reps],
            description="CPU time of the benchmark thread per iteration", **common)
        for key in reps[0]:
            if key in STD or not isinstance(reps[0][key], (int, float)):
                continue
            vals = [x.get(key) for x in reps if isinstance(x.get(key), (int, float))]
            if key == "bytes_per_second":
                vals = [v / 2**20 for v in vals]
            add(f"{base}:{key}", bench, counter_unit(key), vals,
                description=f"Google Benchmark counter {key}", **common)

# ttrpc: ours vs containerd's Go ttrpc, p50 of unary round trips.
for pair, fam in (("ours->ours", "BM_OurClient_OurServer"), ("go->go", "BM_GoClient_GoServer"),
                  ("go->ours", "BM_GoClient_OurServer"), ("ours->go", "BM_OurClient_GoServer")):
    src = find(f"ttrpc.{fam}:p50_us")
    if src:
        add(f"ttrpc.p50_latency.{pair}", "ttrpc", "us", src.get("samples", [src["median"]]),
            description=f"unary Echo round trip p50, client->server {pair}, Unix socket, "
            "one sample per Google Benchmark repetition (20000 calls each)")
ratio("ttrpc.p50_latency.ours->ours", "ttrpc.p50_latency.go->go")
# A Go-client iteration is a whole peer run: plot the per-call p50s instead of real_time.
if any(find(f"ttrpc.p50_latency.{p}") for p in ("ours->ours", "go->go")):
    gb_samples["ttrpc (p50 per call, client->server)"] = {
        p: find(f"ttrpc.p50_latency.{p}").get("samples", [find(f"ttrpc.p50_latency.{p}")["median"]])
        for p in ("ours->ours", "go->go", "go->ours", "ours->go") if find(f"ttrpc.p50_latency.{p}")}
    gb_samples.pop("ttrpc", None)
target("ttrpc.p50_latency.ours->ours", "ttrpc latency <= 0.5x Go's", "<=", 0.5, "x", False, "ratio")

# vmm: issue 11's targets.
target("vmm.BM_CreateToFirstKvmRun/128", "create -> first guest instruction <= 5 ms", "<=", 5,
       "ms", False)
target("vmm.BM_CreateToFirstKvmRun/128:create_cpu_ms", "create -> first guest instruction, CPU <= 2 ms",
       "<=", 2, "ms", False)
r = find("vmm.BM_VmmRssOverhead:rss_overhead_kib")
if r:
    add("vmm.rss_overhead", "vmm", "MiB", [x / 1024 for x in r.get("samples", [r["median"]])],
        vm=True, vcpus=1, memory_mib=128, platform=r["platform"],
        description="VmRSS growth across Machine::Create+Start (tiny spin kernel) minus the guest "
        "pages resident (mincore on the guest RAM)")
    target("vmm.rss_overhead", "VMM RSS overhead <= 3 MiB", "<=", 3, "MiB", False)

# ---- agent (host mode) -----------------------------------------------------------------------
t = read(os.path.join(RAW, "agent.txt"))
m = re.search(r"agent_rss_idle_kib (\d+)", t)
if m:
    add("agent.rss_idle", "agent", "MiB", [int(m[1]) / 1024],
        description="vessel-agent VmRSS after CreateSandbox, host mode (no VM)")
m = re.search(r"create_to_running_ms p50 ([\d.]+) p90 ([\d.]+) \(n=(\d+); CreateContainer p50 ([\d.]+), "
              r"StartContainer p50 ([\d.]+)", t)
if m:
    add("agent.create_to_running_p50", "agent", "ms", [float(m[1])],
        description=f"CreateContainer -> StartContainer returned, p50 of {m[3]} (p90 {m[2]} ms), host mode",
        iterations=int(m[3]), p90=float(m[2]))
    add("agent.create_container_p50", "agent", "ms", [float(m[4])],
        description="agent CreateContainer p50, host mode")
    add("agent.start_container_p50", "agent", "ms", [float(m[5])],
        description="agent StartContainer p50, host mode")
m = re.search(r"agent_rss_10_containers_kib (\d+)", t)
if m:
    add("agent.rss_10_containers", "agent", "MiB", [int(m[1]) / 1024],
        description="vessel-agent VmRSS with 10 running containers, host mode")

# ---- sandbox ---------------------------------------------------------------------------------
sandbox = load_json(os.path.join(RAW, "sandbox.json"))
timeline = []
if sandbox:
    timeline = sandbox.get("timeline", [])
    for r in sandbox.get("results", []):
        r = dict(r)
        r["benchmark"] = "sandbox"
        r.setdefault("vm", True)
        results.append(r)
    for r in sandbox.get("results", []):
        if r.get("parallel", 1) > 1 and r.get("vmm_overhead_mib_per_sandbox") is not None:
            n = r["parallel"]
            add(f"sandbox.vmm_overhead_parallel_{n}", "sandbox", "MiB", [r["vmm_overhead_mib_per_sandbox"]],
                vm=True, vcpus=r.get("vcpus"), memory_mib=r.get("memory_mib"), platform=r.get("platform"),
                description=f"(VmRSS growth - guest RAM Rss) / {n} across {n} parallel Sandbox::Create")
            target(f"sandbox.vmm_overhead_parallel_{n}", f"VMM RSS overhead <= 3 MiB ({n} sandboxes at once)",
                   "<=", 3, "MiB", False)
    target("sandbox.vmm_overhead_after_create", "VMM RSS overhead <= 3 MiB", "<=", 3, "MiB", False)
    target("sandbox.kernel_boot", "boot to userspace <= 60 ms (hardware KVM)", "<=", 60, "ms", True)

# ---- shim: ctr run --rm /bin/true, vessel vs runc ---------------------------------------------
t = read(os.path.join(RAW, "shim.txt"))
m = re.search(r"guest RAM mapping (\d+) MiB", t)
shim_mem = int(m[1]) if m else None
for m in re.finditer(r"ctr run --rm /bin/true\s+(runc|vessel)\s+p50\s+([\d.]+) s\s+min\s+([\d.]+) s\s+max\s+"
                     r"([\d.]+) s\s+\((\d+) runs\)\s+\[([^\]]*)\]", t):
    name, p50, lo, hi, n, plat = m.groups()
    r = add(f"shim.ctr_run_true.{name}", "shim", "s", [float(p50)], vm=(name == "vessel"),
            vcpus=1 if name == "vessel" else None, memory_mib=shim_mem if name == "vessel" else None,
            platform=plat if name == "vessel" else None,
            description=f"`ctr run --rm IMAGE ID /bin/true` wall time via {name}'s shim, private containerd")
    if r:
        r.update(repetitions=int(n), min=float(lo), max=float(hi))
        r.pop("samples", None)
ratio("shim.ctr_run_true.vessel", "shim.ctr_run_true.runc")
target("shim.ctr_run_true.vessel", "ctr run <= 1.5x runc (hardware KVM)", "<=", 1.5, "x", True, "ratio")
m = re.search(r"guest RAM mapping (\d+) MiB, guest-touched \(its Rss\) ([\d.]+) MiB; VmRSS beyond guest memory ([\d.]+) MiB", t)
if m:
    add("shim.vessel_shim_rss_beyond_guest", "shim", "MiB", [float(m[3])], vm=True, vcpus=1,
        memory_mib=int(m[1]), description="vessel shim VmRSS minus its guest RAM mapping's Rss, one container running")
    add("shim.vessel_guest_touched", "shim", "MiB", [float(m[2])], vm=True, vcpus=1, memory_mib=int(m[1]),
        description="Rss of the shim's guest RAM mapping (what the guest touched)")
m = re.search(r"shim memory\s+runc\s+pid \S+\s+VmRSS: (\d+) kB", t)
if m:
    add("shim.runc_shim_rss", "shim", "MiB", [int(m[1]) / 1024],
        description="containerd-shim-runc-v2 VmRSS, one container running")

# ---- boot_compare: vessel vs QEMU microvm ------------------------------------------------------
t = read(os.path.join(RAW, "boot_compare.txt"))
boots = {}
notes = []
for m in re.finditer(r"^boot_compare: (qemu \(\w+\) did not reach /init); its last lines:\n((?:    .*\n?){0,3})", t, re.M):
    notes.append(f"boot_compare: {m[1]}: " + " / ".join(l.strip() for l in m[2].splitlines() if l.strip())[:300])
for m in re.finditer(r"^(vessel-vmm \(vmlinux\)|qemu microvm \((\w+)\))\s+first-byte\s+(\S+) s\s+/init\s+(\S+) s\s+"
                     r"init-done\s+(\S+) s.*\[([^\]]*)\]\s*$", t, re.M):
    who = "vessel" if m[1].startswith("vessel") else "qemu_" + m[2]
    vals = {}
    for k, v in (("first_byte", m[3]), ("init", m[4]), ("init_done", m[5])):
        try:
            vals[k] = float(v)
        except ValueError:
            pass
    boots[who] = (vals, m[6])
    for k, v in vals.items():
        add(f"boot_compare.{who}.{k}", "boot_compare", "s", [v], vm=True, vcpus=1, memory_mib=128,
            platform=m[6], description=f"host seconds from launch to the guest's {k.replace('_', ' ')} "
            "(same kernel + test initramfs)")
for who in boots:
    if who != "vessel":
        a, b = find("boot_compare.vessel.init"), find(f"boot_compare.{who}.init")
        if a and b and b["median"]:
            add(f"boot_compare.vessel_over_{who}.init", "boot_compare", "x", [a["median"] / b["median"]],
                vm=True, vcpus=1, memory_mib=128, platform=a["platform"],
                description=f"vessel / QEMU microvm ({who[5:]}) time to /init, same run",
                ratio_to=f"boot_compare.{who}.init", ratio=a["median"] / b["median"])
target("boot_compare.vessel.init", "boot to userspace <= 60 ms (hardware KVM)", "<=", 0.06, "s", True)

# ---- guest_io -----------------------------------------------------------------------------------
t = read(os.path.join(RAW, "guest_io.txt"))
for pat, name, unit, desc in (
        (r"vsock connect \(CONNECT -> OK\): p50 ([\d.]+) ms", "vsock_connect_p50", "ms", "hybrid vsock connect p50"),
        (r"vsock echo: .*?: ([\d.]+) MiB/s each way", "vsock_echo", "MiB/s", "vsock stream through the guest's echo, each way"),
        (r"tcp host->guest: .*?: ([\d.]+) MiB/s", "tcp_host_to_guest", "MiB/s", "TCP host->guest over the tap"),
        (r"tcp guest->host: .*?([\d.]+) MiB/s", "tcp_guest_to_host", "MiB/s", "TCP guest->host over the tap"),
        (r"virtio-fs in the guest.*?metadata_ops_per_s=([\d.]+)", "virtiofs_metadata", "ops/s", "virtio-fs create+stat+unlink in the guest"),
        (r"virtio-fs in the guest.*?write_mib_per_s=([\d.]+)", "virtiofs_write", "MiB/s", "virtio-fs sequential write in the guest"),
        (r"virtio-fs in the guest.*?read_mib_per_s=([\d.]+)", "virtiofs_read", "MiB/s", "virtio-fs sequential read in the guest"),
        (r"host directory directly \(ceiling\): metadata_ops_per_s=([\d.]+)", "host_dir_metadata", "ops/s", "the same on the host directory (ceiling)"),
        (r"host directory directly \(ceiling\):.*?write_mib_per_s=([\d.]+)", "host_dir_write", "MiB/s", "sequential write on the host directory (ceiling)"),
        (r"host directory directly \(ceiling\):.*?read_mib_per_s=([\d.]+)", "host_dir_read", "MiB/s", "sequential read on the host directory (ceiling)")):
    m = re.search(pat, t)
    if m:
        add(f"guest_io.{name}", "guest_io", unit, [float(m[1])], vm=not name.startswith("host"),
            vcpus=1 if not name.startswith("host") else None,
            memory_mib=256 if not name.startswith("host") else None, description=desc)

# ---- write results.json --------------------------------------------------------------------------
for r in results:
    for k, v in list(r.items()):
        r[k] = clean(v)
doc = {"schema": "vessel-bench/1", "host": host, "benchmarks": benchmarks, "notes": notes,
       "results": results}
with open(os.path.join(OUT, "results.json"), "w") as f:
    json.dump(doc, f, indent=1, allow_nan=False)
    f.write("\n")


# ---- results.md ------------------------------------------------------------------------------
def fmt(v):
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    if abs(v) >= 0.01:
        return f"{v:.3f}"
    return f"{v:.2g}"


md = [f"# vessel benchmarks ({'quick' if host.get('quick') else 'full'} run)", "",
      f"- Platform: **{PLATFORM}**; host {host.get('cpus')} CPUs ({host.get('cpu_model', '?')}), "
      f"{host.get('memory_mib')} MiB, kernel {host.get('kernel')}",
      f"- Date: {host.get('date')}; git {host.get('git')}; load average before {host.get('load_before')}, "
      f"after {host.get('load_after', '?')}; {host.get('seconds', '?')} s in all",
      "- Figures: median of the repetitions (min..max); ratios are measured in the same run.",
      ]
if PLATFORM.startswith("kvm_pvm"):
    md.append("- **kvm_pvm**: the guest kernel is emulated (~1.5 M instructions/s), so every figure "
              "that includes guest execution (boots, container start, guest I/O) measures the "
              "emulator, not vessel; host-side figures (VM setup, RSS, micro-benchmarks) and ratios "
              "from one run are meaningful. Targets marked 'hardware KVM' do not apply here.")
md += ["", "## Benchmarks run", "", "| benchmark | status | seconds | reason |", "|---|---|---:|---|"]
for b in benchmarks:
    md.append(f"| {b['name']} | {b['status']} | {b['seconds']:.1f} | {b['reason'].replace('|', '/')} |")

if notes:
    md += ["", "Notes:"] + [f"- {n}" for n in notes]

tgt = [r for r in results if r.get("target")]
if tgt:
    md += ["", "## Targets (issue 11)", "", "| target | figure | measured | met |", "|---|---|---:|---|"]
    for r in tgt:
        t = r["target"]
        v = r.get("ratio") if t["compared"] == "ratio" else r["median"]
        unit = "x" if t["compared"] == "ratio" else r["unit"]
        met = {True: "yes", False: "**no**", None: f"n/a on {PLATFORM}"}[t["met"]]
        md.append(f"| {t['text']} | `{r['name']}` | {fmt(v)} {unit} | {met} |")

comps = [r for r in results if r.get("ratio_to")]
if comps:
    md += ["", "## Comparisons (same run)", "", "| figure | median | vs | its median | ratio |",
           "|---|---:|---|---:|---:|"]
    for r in comps:
        o = find(r["ratio_to"])
        md.append(f"| `{r['name']}` | {fmt(r['median'])} {r['unit']} | `{r['ratio_to']}` | "
                  f"{fmt(o['median']) if o else '-'} {o['unit'] if o else ''} | {r['ratio']:.2f}x |")

order = []
for r in results:
    if r["benchmark"] not in order:
        order.append(r["benchmark"])
for bench in order:
    rs = [r for r in results if r["benchmark"] == bench and not r["name"].endswith(":cpu")]
    plats = sorted({r["platform"] for r in rs})
    shapes = sorted({f"guest {r['vcpus']} vCPU, {r['memory_mib']} MiB" for r in rs if r.get("vm")})
    if any(not r.get("vm") for r in rs):
        shapes.append(f"host-side code on {host.get('cpus')} CPUs")
    md += ["", f"## {bench}", "", f"Platform: {'; '.join(plats)}. {'; '.join(shapes)}.", "",
           "| figure | median | min | max | unit | n |", "|---|---:|---:|---:|---|---:|"]
    for r in rs:
        md.append(f"| `{r['name']}` | {fmt(r['median'])} | {fmt(r['min'])} | {fmt(r['max'])} | "
                  f"{r['unit']} | {r['repetitions']} |")
with open(os.path.join(OUT, "results.md"), "w") as f:
    f.write("\n".join(md) + "\n")

# ---- plots ---------------------------------------------------------------------------------------
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

title_suffix = f"\n{PLATFORM}, {host.get('cpus')} host CPUs, {host.get('date', '')[:10]}"
pngs = []

# 1. Boot timeline: Sandbox::Create -> container exited, stacked per repetition (+ boot_compare).
PHASES = ["vm_setup", "kernel_boot", "agent_start", "sandbox_ready", "create_container",
          "start_container", "run_to_exit"]
rows = []
for i, t in enumerate(timeline):
    if "kernel_boot" not in t:
        t = dict(t, kernel_boot=0, agent_start=t.get("agent_ready", 0))
    rows.append((f"sandbox rep {i}", [t.get(p, 0) / 1e3 for p in PHASES]))
if rows or boots:
    nplots = (1 if rows else 0) + (1 if boots else 0)
    fig, axes = plt.subplots(nplots, 1, figsize=(13, 1.6 + 2.0 * nplots + 0.5 * (len(rows) + len(boots))), squeeze=False)
    ax_i = 0
    if rows:
        ax = axes[ax_i][0]
        ax_i += 1
        colors = plt.cm.tab10.colors
        for y, (label, vals) in enumerate(rows):
            left = 0
            for k, (p, v) in enumerate(zip(PHASES, vals)):
                ax.barh(y, v, left=left, color=colors[k % 10], label=p if y == 0 else None)
                left += v
            ax.text(left, y, f" {left:.1f} s", va="center", fontsize=8)
        med = {p: statistics.median([t.get(p, 0) for t in timeline]) for p in PHASES}
        handles, labels = ax.get_legend_handles_labels()
        ax.legend(handles, [f"{l} (median {med[l]:.1f} ms)" for l in labels], fontsize=7,
                  loc="upper left", bbox_to_anchor=(1.01, 1.0))
        ax.set_yticks(range(len(rows)), [r[0] for r in rows])
        ax.set_xlabel("seconds since Sandbox::Create")
        ax.set_title("Sandbox::Create -> agent ready -> container `true` exited" + title_suffix, fontsize=9)
    if boots:
        ax = axes[ax_i][0]
        names = list(boots)
        labelled = set()
        for y, who in enumerate(names):
            vals, plat = boots[who]
            prev = 0
            for k, key in enumerate(("first_byte", "init", "init_done")):
                if key in vals:
                    ax.barh(y, vals[key] - prev, left=prev, color=plt.cm.Set2.colors[k],
                            label={"first_byte": "launch -> first console byte",
                                   "init": "-> Run /init", "init_done": "-> init's last line"}[key]
                            if key not in labelled else None)
                    labelled.add(key)
                    prev = vals[key]
            ax.text(prev, y, f" {prev:.2f} s" + ("" if "init_done" in vals else
                    " (did not reach /init)" if "init" not in vals else " (no init-done line)"),
                    va="center", fontsize=8)
        ax.set_yticks(range(len(names)), [f"{n} [{boots[n][1][:30]}]" for n in names], fontsize=7)
        ax.set_xlabel("host seconds since launch")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        ax.set_title("Boot of the same kernel + initramfs: vessel-vmm vs QEMU microvm" + title_suffix, fontsize=9)
    fig.tight_layout()
    fig.savefig(os.path.join(OUT, "boot_timeline.png"), dpi=110)
    plt.close(fig)
    pngs.append("boot_timeline.png")

# 2. Latency distributions: each micro-benchmark's per-repetition wall time (log scale).
dist = {b: s for b, s in gb_samples.items() if s}
if dist:
    n = len(dist)
    fig, axes = plt.subplots(n, 1, figsize=(11, sum(1.0 + 0.28 * len(s) for s in dist.values())), squeeze=False)
    for ax, (bench, series) in zip(axes[:, 0], dist.items()):
        labels = list(series)
        ax.boxplot([series[l] for l in labels], vert=False, widths=0.6)
        for y, l in enumerate(labels, start=1):
            ax.plot(series[l], [y] * len(series[l]), "o", ms=2, alpha=0.6, color="tab:blue")
        ax.set_yticks(range(1, len(labels) + 1), [l[:70] for l in labels], fontsize=6)
        ax.set_xscale("log")
        ax.set_xlabel("microseconds per iteration (wall), one dot per repetition", fontsize=7)
        ax.set_title(bench, fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
    fig.suptitle("Micro-benchmark latency distributions" + title_suffix, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(os.path.join(OUT, "latency_distributions.png"), dpi=100)
    plt.close(fig)
    pngs.append("latency_distributions.png")

# 3. Targets and comparisons: measured / target (1.0 = on target), and same-run ratios.
bars = []
for r in tgt:
    t = r["target"]
    v = r.get("ratio") if t["compared"] == "ratio" else r["median"]
    if v is not None and t["value"]:
        bars.append((f"{t['text']}{'' if t['met'] is not None else ' [n/a here]'}\n{r['name']}: "
                     f"{fmt(v)} {'x' if t['compared'] == 'ratio' else r['unit']}", v / t["value"], t["met"]))
if bars or comps:
    fig, axes = plt.subplots(2, 1, figsize=(11, 2.5 + 0.5 * (len(bars) + len(comps))),
                             gridspec_kw={"height_ratios": [max(len(bars), 1), max(len(comps), 1)]})
    ax = axes[0]
    if bars:
        vals = [max(b[1], 1e-2) for b in bars]
        ax.barh(range(len(bars)), vals,
                color=["tab:green" if b[2] else "tab:red" if b[2] is False else "tab:gray" for b in bars])
        ax.axvline(1, color="k", lw=1)
        ax.set_xscale("log")
        ax.set_xlim(1e-2, max(vals + [1]) * 20)
        ax.set_yticks(range(len(bars)), [b[0] for b in bars], fontsize=7)
        for y, b in enumerate(bars):
            ax.text(max(b[1], 1e-2), y, f" {b[1]:.3g}x of target", va="center", fontsize=7)
    ax.set_xlabel("measured / target (left of the line: met; green met, red not met, gray: hardware-KVM target)", fontsize=8)
    ax.set_title("Issue 11 targets" + title_suffix, fontsize=9)
    ax = axes[1]
    if comps:
        ax.barh(range(len(comps)), [c["ratio"] for c in comps], color="tab:blue")
        ax.axvline(1, color="k", lw=1)
        rs = [c["ratio"] for c in comps]
        if max(rs) / max(min(rs), 1e-9) > 20:  # a log scale keeps 0.5x and 300x both readable
            ax.set_xscale("log")
            ax.set_xlim(min(rs + [1]) / 2, max(rs + [1]) * 4)
        else:
            ax.set_xlim(0, max(rs + [1]) * 1.25)
        ax.set_yticks(range(len(comps)), [f"{c['name']}\n/ {c['ratio_to']}" for c in comps], fontsize=7)
        for y, c in enumerate(comps):
            ax.text(c["ratio"], y, f" {c['ratio']:.2f}x", va="center", fontsize=7)
    ax.set_xlabel("ratio of medians, measured in the same run", fontsize=8)
    ax.set_title("Comparisons", fontsize=9)
    fig.tight_layout()
    fig.savefig(os.path.join(OUT, "targets_and_ratios.png"), dpi=110)
    plt.close(fig)
    pngs.append("targets_and_ratios.png")

print(f"report: {len(results)} figures from {sum(1 for b in benchmarks if b['status'] == 'ok')} benchmarks "
      f"({sum(1 for b in benchmarks if b['status'] == 'skipped')} skipped, "
      f"{sum(1 for b in benchmarks if b['status'] == 'failed')} failed); {', '.join(pngs)}")
