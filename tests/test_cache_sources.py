"""Numba's on-disk cache never serves code compiled from an older kernel source.

Numba's ``cache=True`` keys a cached function by the source file that
*defines* it (a hash of that file) and by its bytecode and closure
variables; it does not notice an edit to another file whose functions it
inlines. `fastopt._hostscan.runner` and `list_runner` (defined in
``fastopt/_hostscan.py``) inline the loops of ``kernels/cpu.py`` and
``kernels/multi_cpu.py``, which inline the element step of
``kernels/variants.py`` and the rules of ``kernels/rules.py``, and build
their array views with ``kernels/multi_table.py``. What makes an edit to any
of those reach the cache key is `kernels.variants.FINGERPRINT`, a hash of
every ``kernels/*.py``, which is part of the variant key string the runners
close over.

So: an edit to any of those five files changes FINGERPRINT (checked by
hashing edited copies: no process, no compiling); and, for a rule source and
a skeleton source, in a copy of the installed package layout with a warm
cache, a comment appended to the file makes a fresh process see another
FINGERPRINT and recompile the runners (cache misses) instead of loading
what was compiled from the old source. (The five files reach the runners
through the same key string, so two of them show it end to end; each end-to-
end case recompiles every runner, about 20 s on a 2-core machine.) A control case
runs the same copy unedited and must load everything from the cache: that
shows the copy's cache is valid, so the misses of the edited cases come from
the edit and nothing else.

Cost: the warm cache is built once per module (per xdist worker): two
child processes, the first compiling everything. Each case then copies it
and runs one child, which recompiles the runners (the edited cases) or
compiles nothing (the control).
"""
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

# Fresh processes over a copied installed layout.
pytestmark = pytest.mark.slow

REPO = pathlib.Path(__file__).resolve().parents[1]

# The kernel sources compiled into the cached runners (see the docstring).
INLINED_SOURCES = ["rules.py", "variants.py", "cpu.py", "multi_cpu.py", "multi_table.py"]

# The child: a single-array and a list-form Adam step on float32 arrays, then
# the cache statistics of every jitted dispatcher that ran, as one JSON line.
CHILD = r'''
import json
import numpy as np

import fastopt
import fastopt.kernels
from fastopt import _accel, functional as F
from fastopt.kernels import cpu, multi_cpu, variants

HYPER = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8)
rng = np.random.default_rng(0)


def arrays(count):
    """p, g, m, v: `count` tensors of 100 float32 elements each."""
    made = [[rng.standard_normal(100).astype(np.float32) for _ in range(count)]
            for _ in range(2)]
    return (*made, [np.zeros(100, np.float32) for _ in range(count)],
            [np.zeros(100, np.float32) for _ in range(count)])


p, g, m, v = (a[0] for a in arrays(1))
F.adam(p, g, m, v, step=1, **HYPER)          # `_hostscan.runner`
ps, gs, ms, vs = arrays(2)
# The first list call checks the new layout and runs the loop of
# `multi_cpu.kernel`; the second finds the same layout and runs the loop
# inlined into `_hostscan.list_runner`, so that inlined copy runs too.
F.adam(ps, gs, ms, vs, step=1, **HYPER)
F.adam(ps, gs, ms, vs, step=2, **HYPER)


def name(vt):
    """The variant's key without the fingerprint, to compare across edits."""
    return vt.key.rsplit("-", 1)[0]


def stats(dispatcher):
    return {"signatures": len(dispatcher.signatures),
            "hits": sum(dispatcher.stats.cache_hits.values()),
            "misses": sum(dispatcher.stats.cache_misses.values())}


# The accelerators: `_accel.SINGLE` values are ((partials of the serial and
# the parallel dispatchers), ...),
# `_accel.MANY` values a partial of the dispatcher (None: accelerators off).
runners = {f"runner:{name(vt)}:{loop}": stats(run.func)
           for vt, plan in _accel.SINGLE.items() if plan[0] is not None
           for loop, run in enumerate(plan[0]) if run.func.signatures}   # the loops run
runners.update({f"list_runner:{name(vt)}:{loops}": stats(run.func)
                for (vt, loops), run in _accel.MANY.items() if run is not None})
# The stand-alone kernels (defined in cpu.py and multi_cpu.py, so Numba's own
# file check covers their edits): reported to show nothing else is stale.
kernels = {f"{mod.__name__}:{name(vt)}": stats(kern)
           for mod in (cpu, multi_cpu) for kernels in (mod._kernels, mod._serial)
           for vt, kern in kernels.items()}
print(json.dumps({
    "fastopt": fastopt.__file__, "kernels": fastopt.kernels.__file__,
    "fingerprint": variants.FINGERPRINT, "runners": runners, "kernels_": kernels,
    "result": [np.asarray(a).tolist() for a in (p, *ps)]}))
'''


def _child(root):
    """Run the child in the package copy at `root`; its JSON summary."""
    env = dict(os.environ)
    # The repo's own fastopt (an editable install) must not be imported: the
    # copy comes first on the path and the child runs from it (checked below).
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    # The cache lives in the copy's __pycache__ folders, next to the sources
    # (Numba's default), not in a NUMBA_CACHE_DIR: there Numba names each
    # source's folder by a hash of its absolute path, so a cache copied to
    # another directory would never be found. In-tree it travels with the
    # package copy, which lets every case start from one warm cache.
    env.pop("NUMBA_CACHE_DIR", None)
    out = subprocess.run([sys.executable, str(root / "child.py")], cwd=root, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    run = json.loads(out.stdout.splitlines()[-1])
    for name in ("fastopt", "kernels"):   # the copy ran, not the repo's package
        assert pathlib.Path(run[name]).resolve().is_relative_to(root.resolve()), run[name]
    assert run["runners"], "no runner ran: the fast path is off, nothing is tested"
    return run


def _totals(stats):
    return {k: sum(s[k] for s in stats.values()) for k in ("signatures", "hits", "misses")}


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    """A copy of the package as a wheel lays it out (``kernels/`` installed as
    ``fastopt/kernels``), run twice: (its root, the first run, the second)."""
    root = tmp_path_factory.mktemp("warm")
    skip = shutil.ignore_patterns("__pycache__")   # no cache from the repo's runs
    shutil.copytree(REPO / "fastopt", root / "fastopt", ignore=skip)
    shutil.copytree(REPO / "kernels", root / "fastopt" / "kernels", ignore=skip)
    (root / "child.py").write_text(CHILD)
    return root, _child(root), _child(root)


def _case(warm, tmp_path):
    """A fresh copy of the warm package and its cache (sources, cache files
    and their timestamps alike), for one case to change."""
    root = tmp_path / "pkg"
    shutil.copytree(warm[0], root)
    return root


def test_second_process_compiles_nothing(warm):
    """The baseline the edited cases are measured against: the first run
    compiles every runner, the second loads them all."""
    _, first, second = warm
    assert all(s["misses"] == s["signatures"] > 0 for s in first["runners"].values())
    assert second["fingerprint"] == first["fingerprint"]
    assert second["runners"].keys() == first["runners"].keys()
    for stats in (second["runners"], second["kernels_"]):
        totals = _totals(stats)
        assert totals["misses"] == 0, f"recompiled: {stats}"
        assert totals["hits"] == totals["signatures"] > 0
    assert second["result"] == first["result"]


def test_copied_cache_is_served(warm, tmp_path):
    """Control: the copy of the warm cache is found where each case puts it.
    Without this, a cache lost in copying would make every edited case
    recompile, and pass, whatever the fingerprint does."""
    run = _child(_case(warm, tmp_path))
    assert run["fingerprint"] == warm[2]["fingerprint"]
    totals = _totals(run["runners"])
    assert totals["misses"] == 0 and totals["hits"] == totals["signatures"] > 0, run["runners"]


@pytest.mark.parametrize("source", INLINED_SOURCES)
def test_edited_source_changes_the_fingerprint(tmp_path, source):
    from fastopt.kernels import variants
    folder = tmp_path / "kernels"
    shutil.copytree(REPO / "kernels", folder, ignore=shutil.ignore_patterns("__pycache__"))
    assert variants._source_fingerprint(folder) == variants.FINGERPRINT
    path = folder / source
    path.write_text(path.read_text() + "# edited\n")
    assert variants._source_fingerprint(folder) != variants.FINGERPRINT


@pytest.mark.parametrize("source", ["rules.py", "multi_table.py"])
def test_edited_source_recompiles(warm, tmp_path, source):
    root = _case(warm, tmp_path)
    path = root / "fastopt" / "kernels" / source
    text = path.read_text()
    # A harmless edit: the compiled code is unchanged, only the source is
    # not. Numba checks only _hostscan.py (unchanged) for the runners.
    path.write_text(text + ("" if text.endswith("\n") else "\n") + "# edited\n")
    run = _child(root)
    assert run["fingerprint"] != warm[2]["fingerprint"], f"{source} is not fingerprinted"
    assert run["runners"].keys() == warm[2]["runners"].keys()
    for name, stats in run["runners"].items():
        # Every runner recompiled, none loaded: a hit would be code compiled
        # from the source before the edit.
        assert stats["hits"] == 0 and stats["misses"] == stats["signatures"] > 0, \
            f"{name} served from the cache after {source} was edited: {stats}"
    assert run["result"] == warm[2]["result"]
