"""Per-call cost of two revisions of fastopt, side by side in one run.

    python benchmarks/compare_revisions.py BASE_REV [NEW_REV]   (NEW_REV: the working tree)

Each revision is laid out as its wheel would be (``fastopt/`` with
``kernels/`` as ``fastopt/kernels``) in a temporary folder, and each
measurement runs in a fresh interpreter per revision, the two alternating
round after round, so that both see the same machine. Reported: the median
over rounds of each child's median time per call, and new/base.

Cases: ``functional.adam`` on one float32 array of 1,000 and of 1e6
elements, the list form on 150 float32 tensors (a model-sized list:
1,000-65,536 elements each), and the Keras-style ``Adam.apply_gradients``
on the same 150 tensors, and ``fastopt.torch.Adam.step`` on 150 torch
tensors of those sizes. One thread (``NUMBA_NUM_THREADS=1``) for both.
"""
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
ROUNDS = 7

CHILD = r'''
import json, sys, time
import numpy as np
import fastopt, fastopt.functional as F
assert fastopt.__file__.startswith(sys.argv[1]), fastopt.__file__
rng = np.random.default_rng(0)
KW = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8)

def arrays(n):
    p = rng.standard_normal(n).astype(np.float32)
    return p, (rng.standard_normal(n) * 0.1).astype(np.float32), np.zeros_like(p), np.zeros_like(p)

def timed(fn, calls):
    for _ in range(20):
        fn()
    times = []
    for _ in range(calls):
        t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)
    return float(np.median(times))

out = {}
for n, calls in ((1000, 3000), (10**6, 200)):
    p, g, m, v = arrays(n)
    out[f"adam 1 x {n}"] = timed(lambda: F.adam(p, g, m, v, step=3, **KW), calls)
sizes = [int(s) for s in np.geomspace(1000, 65536, 150)]
cols = [arrays(n) for n in sizes]
P, G, M, V = (list(c) for c in zip(*cols))
out["adam list 150"] = timed(lambda: F.adam(P, G, M, V, step=3, **KW), 300)
opt = fastopt.Adam(learning_rate=1e-3)
out["Adam.apply_gradients 150"] = timed(lambda: opt.apply_gradients(zip(G, P)), 300)
import torch, fastopt.torch
torch.set_num_threads(1)
params = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in P]
for t, g in zip(params, G):
    t.grad = torch.from_numpy(g.copy())
topt = fastopt.torch.Adam(params, lr=1e-3)
out["fastopt.torch.Adam.step 150"] = timed(topt.step, 300)
print(json.dumps(out))
'''


def layout(rev, into):
    """The revision's package as its wheel lays it out, under `into`."""
    src = into / "src"
    if rev is None:
        shutil.copytree(ROOT / "fastopt", into / "fastopt", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(ROOT / "kernels", into / "fastopt" / "kernels",
                        ignore=shutil.ignore_patterns("__pycache__"))
        return
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(src), rev],
                   check=True)
    try:
        shutil.copytree(src / "fastopt", into / "fastopt")
        shutil.copytree(src / "kernels", into / "fastopt" / "kernels")
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(src)],
                       check=True)


def main():
    base_rev = sys.argv[1]
    new_rev = sys.argv[2] if len(sys.argv) > 2 else None
    tmp = pathlib.Path(tempfile.mkdtemp())
    trees = {"base": tmp / "base", "new": tmp / "new"}
    for name, rev in (("base", base_rev), ("new", new_rev)):
        trees[name].mkdir()
        layout(rev, trees[name])
    env = {**os.environ, "NUMBA_NUM_THREADS": "1"}
    results = {name: [] for name in trees}
    for r in range(ROUNDS + 1):          # round 0 fills each tree's Numba cache
        for name, tree in trees.items():
            run = subprocess.run([sys.executable, "-c", CHILD, str(tree)], cwd=tree,
                                 env={**env, "PYTHONPATH": str(tree),
                                      "NUMBA_CACHE_DIR": str(tree / "cache")},
                                 capture_output=True, text=True, check=True)
            if r:
                results[name].append(json.loads(run.stdout))
    report = {"base": base_rev, "new": new_rev or "working tree", "rounds": ROUNDS,
              "threads": 1, "cases": {}}
    for case in results["base"][0]:
        base = statistics.median(x[case] for x in results["base"]) * 1e6
        new = statistics.median(x[case] for x in results["new"]) * 1e6
        report["cases"][case] = {"base_us": round(base, 2), "new_us": round(new, 2),
                                 "new_over_base": round(new / base, 3)}
        print(f"{case:28s} base {base:10.2f} µs   new {new:10.2f} µs   new/base {new / base:.3f}")
    print(json.dumps(report, indent=1))
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
