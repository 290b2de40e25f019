"""The report's three forms: a markdown table, the JSON file, the PNG plot."""
import json
import os

IMPL_ORDER = ("fastopt", "floor", "numpy", "torch-single", "torch-foreach",
              "torch-fused", "cupy", "optax")


def _size(n):
    mant, exp = f"{n:.0e}".split("e")
    return f"{mant}e{int(exp)}" if n >= 10_000 else str(n)


def table(report):
    """Markdown table: effective GB/s per implementation, and the two ratios.

    "÷floor" is fastopt time / floor time (1.00 = at the memory floor; target
    <= 1.10); "×torch" is torch time / fastopt time against torch's fused form
    (foreach where torch has no fused one; target >= 1.0).
    """
    impls = [i for i in IMPL_ORDER
             if any(r["impl"] == i and r["status"] == "ok" for r in report["results"])]
    gbps = {(r["optimizer"], r["dtype"], r["size"], r["impl"]): r["gbps"]
            for r in report["results"] if r["status"] == "ok"}
    head = ["optimizer", "dtype", "n", *[f"{i} GB/s" for i in impls],
            "÷floor", "×torch"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in report["ratios"]:
        key = (row["optimizer"], row["dtype"], row["size"])
        cells = [row["optimizer"], row["dtype"], _size(row["size"])]
        cells += [f"{gbps[key + (i,)]:.1f}" if key + (i,) in gbps else "–"
                  for i in impls]
        cells.append("–" if row["vs_floor"] is None else
                     f"{row['vs_floor']:.2f}{'' if row['meets_floor_target'] else ' ✗'}")
        ref = {"torch-fused": "", "torch-foreach": " (foreach)"}.get(
            row["torch_reference"], "")
        cells.append("–" if row["vs_torch"] is None else
                     f"{row['vs_torch']:.2f}{ref}"
                     f"{'' if row['meets_torch_target'] else ' ✗'}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary(report):
    """The table and the lines around it: machine, copy, overhead, cold start."""
    meta = report["meta"]
    gpu = meta.get("gpu")
    where = (f"{gpu['name']} (driver {gpu['driver']})" if gpu else
             f"{meta['cpu_model']}, {meta['threads']} threads")
    out = [f"fastopt.bench on {meta['device']}: {where}; median of "
           f"{meta['repeats']} runs; load average {meta['load_average_before']}"
           f"{'' if meta.get('quiet') else ' (machine NOT quiet)'}", "",
           table(report), ""]
    for c in report["copy"]:
        out.append(f"copy bandwidth, {c['dtype']} n={_size(c['size'])}: "
                   f"{c['gbps']:.1f} GB/s ({c['impl']})")
    for c in report.get("stream", ()):
        out.append(f"STREAM {c['kernel']}, {c['dtype']} n={_size(c['size'])} "
                   f"({c['bytes_per_element']} B an element): {c['gbps']:.1f} GB/s")
    fractions = [r for r in report["results"] if "vs_stream_copy" in r]
    for r in fractions:
        out.append(f"{r['optimizer']} {r['dtype']} n={_size(r['size'])}: {r['gbps']:.1f} GB/s, "
                   f"{100 * r['vs_stream_copy']:.0f}% of STREAM copy")
    for o in report.get("dispatch_overhead", ()):
        out.append(f"dispatch overhead, {o['optimizer']} {o['dtype']} n={o['n']}: "
                   f"{o['overhead_us']:.1f} µs (call {o['call_us']:.1f} µs, "
                   f"kernel alone {o['kernel_us']:.1f} µs; the call without its loop "
                   f"{o['python_us']:.1f} µs)")
    for a in report.get("accelerators", ()):
        out.append(f"accelerator, {a['optimizer']} {a['dtype']} {a['case']}: "
                   f"{a['with_us']:.1f} µs a step with, {a['without_us']:.1f} without "
                   f"({a['saved_pct']:.0f}% saved)")
    cold = report.get("cold_start")
    if cold:
        for label in ("cold_cache", "warm_cache"):
            c = cold[label]
            steps = ", ".join(f"{k} {v:.3f} s" for k, v in c["first_step_s"].items())
            out.append(f"first step in a fresh process, {label.replace('_', ' ')}: "
                       f"{steps} (import {c['import_s']:.2f} s; cache hits "
                       f"{c['cache_hits']}, misses {c['cache_misses']})")
    for r in report.get("ratios", ()):
        if "rule" in r["speedup"]:   # `--rule`: the user's rule against the built-in
            out.append(f"rule, {r['optimizer']} {r['dtype']} n={_size(r['size'])}: "
                       f"{r['speedup']['rule']:.3f}x the built-in's median time")
    skipped = sorted({f"{r['impl']}: {r['note']}" for r in report["results"]
                      if r["status"] != "ok"})
    if skipped:
        out += ["", "not measured:"] + [f"  {s}" for s in skipped]
    return "\n".join(out)


def write_json(report, path):
    with open(path, "w") as f:
        json.dump(report, f, indent=1, default=str)
        f.write("\n")


def plot(report, path):
    """Effective GB/s against size, one line per implementation, one panel per
    optimizer and dtype; the copy bandwidth dashed. Returns False without
    matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    ok = [r for r in report["results"] if r["status"] == "ok"]
    panels = sorted({(r["optimizer"], r["dtype"]) for r in ok},
                    key=lambda p: (p[1], p[0]))
    cols = min(3, len(panels)) or 1
    rows = -(-len(panels) // cols) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows),
                             squeeze=False, sharey=True)
    for ax, (name, dtype) in zip(axes.flat, panels):
        for impl in IMPL_ORDER:
            pts = sorted((r["size"], r["gbps"]) for r in ok
                         if (r["optimizer"], r["dtype"], r["impl"]) == (name, dtype, impl))
            if pts:
                ax.plot(*zip(*pts), marker="o", label=impl,
                        linewidth=2.5 if impl == "fastopt" else 1.2)
        copy = sorted((c["size"], c["gbps"]) for c in report["copy"]
                      if c["dtype"] == dtype)
        if copy:
            ax.plot(*zip(*copy), "k--", linewidth=1, label="copy")
        ax.set_xscale("log")
        ax.set_title(f"{name} {dtype}")
        ax.set_xlabel("elements")
        ax.grid(True, alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("effective GB/s")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    meta = report["meta"]
    fig.suptitle(f"fastopt.bench {meta['device']}, {meta['threads']} threads, "
                 f"{meta['date'][:10]}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def save(report, out_dir, stem):
    """Write ``stem.json`` and ``stem.png`` in out_dir; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    json_path = os.path.join(out_dir, f"{stem}.json")
    png_path = os.path.join(out_dir, f"{stem}.png")
    write_json(report, json_path)
    return json_path, (png_path if plot(report, png_path) else None)
