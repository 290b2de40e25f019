"""Running a program step (`fastopt.spec.Program`): several passes over a list.

`run` is where a functional call of a spec with a program arrives (its
functional function is made by `fastopt.functional._make` like any other).
The pipeline is the elementwise one's (describe, validate, plan, run):

* describe: each argument a list (a single array is a list of one); NumPy
  arrays as they are, torch CPU tensors as zero-copy NumPy views, GPU
  arrays (CuPy, Numba, torch CUDA; the simulator's) as
  `fastopt._program_cuda.DeviceView`, all of a call in one place;
* validate: every array of every tensor (dtype, shape as its slot's
  `Slot.shape_for`, C-contiguity, writeability, no written array
  overlapping another), before anything is written;
* plan (`_plan_group`, one loop over the passes for both targets): the
  tensors grouped by dtype; per group, each pass's address table, built by
  the group's executor (`Host`; `fastopt._program_cuda.Device` on a GPU;
  an `Elementwise` pass: chunks of `kernels.passes.CHUNK` elements; a
  `Factored` pass: one row per matrix of the stack);
* run (`_batch.run`: at once, or at the end of a front end's all-or-nothing
  step): the passes in order, each over the whole group in one parallel
  region, exchanging per-tensor scalars through a float64 table (`env`);
  `PerTensor` arithmetic vectorized over the tensors in NumPy;
  `MatrixFunction` through the arrays' own library's matmul. A group on a
  GPU runs the same passes as CUDA kernels.
"""
import contextlib
from types import SimpleNamespace

import numpy as np

from . import _batch, _facts, _front
from .kernels import passes as _passes
from .spec import Elementwise, Factored, MatrixFunction, PerTensor, selected

_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_LIKE = {np.dtype(np.float32): np.float32(0), np.dtype(np.float64): np.float64(0)}


def _torch():
    import sys
    return sys.modules.get("torch")


def _host(fn, label, a):
    """`a` as a NumPy array sharing its memory (torch CPU tensors), a
    `fastopt._program_cuda.DeviceView` for a GPU array, or a TypeError."""
    if isinstance(a, np.ndarray):
        return a
    torch = _torch()
    if torch is not None and isinstance(a, torch.Tensor):
        if a.device.type == "cuda":
            return _gpu().describe(fn, label, a)
        if a.device.type != "cpu":
            raise TypeError(f"{fn}: {label} is on {a.device}; {fn.rstrip('()')}'s passes "
                            "run on the CPU and CUDA GPUs")
        if a.dtype not in (torch.float32, torch.float64):
            raise TypeError(f"{fn}: {label} must be float32 or float64, got {a.dtype}")
        return a.detach().numpy()
    if _facts.place(a) == _facts.DEVICE:
        return _gpu().describe(fn, label, a)
    raise TypeError(f"{fn}: {label} must be a NumPy array, a torch tensor or a GPU array, "
                    f"got {type(a).__name__}")


def _gpu():
    from . import _program_cuda     # imported on first GPU use only
    return _program_cuda


def _same_place(who, label, a, p, plabel):
    """A TypeError unless `a` lives where param `p` does (host, or the same GPU)."""
    where, there = (None if isinstance(x, np.ndarray) else x.device for x in (a, p))
    if where != there:
        def name(d):
            return "the host" if d is None else f"GPU {d}"
        raise TypeError(f"{who}: {label} is on {name(where)}, {plabel} on {name(there)}")


def _label(fn_name, argument, k, indexed):
    name = _front.frame.name
    if name is not None:
        return name(argument, k)
    return f"{argument}[{k}]" if indexed else argument


def run(fn, spec, h, convention, plan, param, grad, states, pre, hyper):
    """One program step of `spec` over `param`/`grad`/`states` (arrays or
    lists of them); everything checked before anything is written."""
    who = _front.frame.who or f"{fn}()"
    indexed = isinstance(param, (list, tuple))
    if not indexed:
        param, grad = [param], [grad]
        states = {k: (None if v is None else [v]) for k, v in states.items()}
    n = len(param)
    if len(grad) != n:
        raise ValueError(f"{who}: grad has {len(grad)} entries, param has {n}")
    used = [s for s in spec.slots if s.used(h)]
    originals = {"param": param, "grad": grad}
    for s in used:
        given = states.get(s.name)
        if given is None and s.shape is not None:   # per param: checked below
            given = [None] * n
        if given is None:
            raise ValueError(f"{who}: {s.name} is required")
        if not isinstance(given, (list, tuple)) or len(given) != n:
            raise ValueError(f"{who}: {s.name} must be a list of {n} arrays, as param")
        originals[s.name] = given
    arrays = {name: [None] * n for name in originals}
    for name in ("param", "grad"):
        arrays[name] = [_host(who, _label(fn, name, k, indexed), a)
                        for k, a in enumerate(originals[name])]
    # validate
    written = []
    for k in range(n):
        p = arrays["param"][k]
        if p.dtype not in _DTYPES:
            raise TypeError(f"{who}: {_label(fn, 'param', k, indexed)} must be float32 or "
                            f"float64, got {p.dtype}")
        for name in originals:
            label = _label(fn, name, k, indexed)
            slot = next((s for s in used if s.name == name), None)
            shape = p.shape if slot is None else slot.shape_for(p.shape, convention)
            if (shape is None and originals[name][k] is not None
                    and convention in slot.optional):
                shape = p.shape   # the caller's choice (`Slot.optional`)
            if shape is None:     # no array of this slot (or a placeholder, left alone)
                arrays[name][k] = None
                continue
            if originals[name][k] is None:
                raise ValueError(f"{who}: {label} is required (shape {shape})")
            a = arrays[name][k] = _host(who, label, originals[name][k])
            _same_place(who, label, a, arrays["param"][0], _label(fn, "param", 0, indexed))
            if a.dtype != p.dtype:
                raise TypeError(f"{who}: {label} must have param's dtype {p.dtype}, "
                                f"got {a.dtype}")
            if a.shape != shape:
                raise ValueError(f"{who}: {label} must have shape {shape}, got {a.shape}")
            if not a.flags.c_contiguous:
                raise ValueError(f"{who}: {label} must be C-contiguous")
            if name != "grad":
                if not a.flags.writeable:
                    raise ValueError(f"{who}: {label} is read-only")
                if a.nbytes:
                    written.append((a.ctypes.data, a.ctypes.data + a.nbytes, label))
    written.sort()
    for (s0, e0, l0), (s1, e1, l1) in zip(written, written[1:]):
        if s1 < e0:
            raise ValueError(f"{who}: {l0} and {l1} overlap in memory")
    program = spec.program
    if program.select is not None:
        for k in range(n):
            shape = arrays["param"][k].shape
            if not program.select(shape, h, convention):
                raise ValueError(f"{who}: {_label(fn, 'param', k, indexed)}: "
                                 + program.refuse.format(shape=_shape_text(
                                     originals["param"][k])))
    info = SimpleNamespace(h=h, convention=convention, hyper=hyper, plan=plan,
                           originals=originals,
                           has=[frozenset(name for name in arrays if arrays[name][k] is not None)
                                for k in range(n)])
    shapes = [a.shape for a in arrays["param"]]
    for name in program.scratch:     # fresh memory, like each param, in its library
        # only for the tensors a pass that uses it runs on
        need = set()
        for step in program.passes:
            if name in getattr(step, "arrays", ()):
                need.update(selected(step, shapes, info, range(n)))
        originals[name] = [_empty_like(a) if k in need else None
                           for k, a in enumerate(originals["param"])]
        arrays[name] = [None if a is None else _host(who, name, a) for a in originals[name]]
    groups = {}
    for k in range(n):
        groups.setdefault(arrays["param"][k].dtype, []).append(k)
    target = Host if not n or isinstance(arrays["param"][0], np.ndarray) else _gpu().Device
    actions = [_plan_group(spec, info, arrays, index, pre, hyper, target)
               for index in groups.values()]

    def action():
        for act in actions:
            act()

    # in-place writes seen by autograd, as torch's own ops
    _batch.run(_facts.bump_after(action, [a for name, lst in originals.items()
                                          if name != "grad" for a in lst]))


def _plan_group(spec, info, arrays, index, pre, hyper, target):
    """The runs of one dtype group (tensors `index` of the call): each pass
    of the program planned once, its kernels by `target`'s executor (`Host`,
    or `fastopt._program_cuda.Device` for a group on a GPU), the host
    arithmetic and the matrix functions here, for both."""
    program = spec.program
    first = arrays["param"][index[0]]
    dtype = first.dtype
    if program.dtype_scalars is not None:
        hyper = tuple(program.dtype_scalars(hyper, dtype))
    shapes = [arrays["param"][k].shape for k in index]
    sizes = np.array([arrays["param"][k].size for k in index], dtype=np.int64)
    columns = {name: j for j, name in enumerate(program.env)}
    ginfo = SimpleNamespace(**vars(info), dtype=dtype, shapes=shapes, sizes=sizes)
    run = target(arrays, first, pre, hyper)
    steps = []
    for step in program.passes:
        sel = selected(step, shapes, info, index)
        if not sel:
            continue
        if isinstance(step, Elementwise):      # a Factored pass is one too
            ks = [index[j] for j in sel]
            out, reads = [columns[s] for s in step.sums], [columns[s] for s in step.reads]
            if isinstance(step, Factored):
                steps.append(run.factored(step, sel, ks, [shapes[j] for j in sel], out, reads))
            else:
                steps.append(run.elementwise(step, sel, ks, sizes[sel], out, reads))
        elif isinstance(step, PerTensor):
            steps.append(_per_tensor(step.fn, sel, columns, ginfo))
        elif isinstance(step, MatrixFunction):
            steps.append(_matrix(step.fn, sel, index, arrays, info, columns, ginfo,
                                 run.library))
        else:   # pragma: no cover - a spec's own mistake
            raise TypeError(f"unknown pass {step!r}")

    def act():
        env = np.zeros((len(index), len(program.env)))
        with run.session() as session:
            for st in steps:
                st(env, session)

    return act


def _per_tensor(fn, sel, columns, ginfo):
    """A `PerTensor` pass: NumPy arithmetic on the selected rows of env."""
    sub = SimpleNamespace(**{**vars(ginfo), "sizes": ginfo.sizes[sel],
                             "shapes": [ginfo.shapes[j] for j in sel]})

    def run(env, session):
        view = {name: env[sel, j] for name, j in columns.items()}
        fn(view, sub)
        for name, j in columns.items():
            env[sel, j] = view[name]

    return run


def _matrix(fn, sel, index, arrays, info, columns, ginfo, library):
    """A `MatrixFunction` pass: `fn` per selected tensor, on its arrays in
    their own library (``library(original, array) -> (xp, array)``)."""
    def run(env, session):
        for j in sel:
            k = index[j]
            xp = library(info.originals["param"][k], arrays["param"][k])[0]
            tensors = {name: library(info.originals[name][k], arrays[name][k])[1]
                       for name in arrays if arrays[name][k] is not None}
            row = {name: env[j, c] for name, c in columns.items()}
            fn(xp, tensors, SimpleNamespace(**{**vars(ginfo), "env": row, "index": j}))
            for name, c in columns.items():
                env[j, c] = row[name]

    return run


class Host:
    """The executor of a dtype group's kernels on the host
    (`kernels.passes`): a pass's address table built at plan time, its sums
    written into env's columns at run time."""

    def __init__(self, arrays, first, pre, hyper):
        self.arrays, self.like, self.pre, self.hyper = arrays, _LIKE[first.dtype], pre, hyper

    def elementwise(self, step, sel, ks, sizes, out, reads):
        chunks = _chunks(sizes)
        kern = _passes.kernel(_passes.ELEMENTWISE, step.kernel, int(chunks[:, 2].sum()))
        return self._run(kern, sel, step.arrays, ks, chunks, out, reads)

    def factored(self, step, sel, ks, shapes, out, reads):
        mats = _matrices(shapes)
        elements = int((mats[:, 2] * mats[:, 3]).sum())
        kern = _passes.kernel(_passes.FACTORED, step.kernel, elements)
        return self._run(kern, sel, step.arrays, ks, mats, out, reads)

    def _run(self, kern, sel, names, ks, table, out, reads):
        addrs = _addresses(self.arrays, names, ks)
        like, pre, hyper = self.like, self.pre, self.hyper

        def run(env, session):
            sums = kern(addrs, table, np.ascontiguousarray(env[np.ix_(sel, reads)]), like,
                        pre, hyper)
            if out:
                env[np.ix_(sel, out)] = sums

        return run

    @staticmethod
    def session():
        return contextlib.nullcontext()

    @staticmethod
    def library(original, array):
        """The array library of `original` and its array there."""
        torch = _torch()
        if torch is not None and isinstance(original, torch.Tensor):
            return torch, original.detach()
        return np, array


def _empty_like(a):
    torch = _torch()
    if torch is not None and isinstance(a, torch.Tensor):
        return torch.empty_like(a, memory_format=torch.contiguous_format)
    if isinstance(a, np.ndarray):
        return np.empty_like(a)
    return _gpu().empty_like(a)


def _shape_text(a):
    torch = _torch()
    if torch is not None and isinstance(a, torch.Tensor):
        return str(a.size())
    return str(a.shape)


def _addresses(arrays, names, ks):
    return np.array([[arrays[name][k].ctypes.data for name in names] for k in ks],
                    dtype=np.int64).reshape(len(ks), len(names))


def _chunks(sizes, chunk=_passes.CHUNK):
    rows = []
    for t, size in enumerate(sizes):
        for start in range(0, int(size), chunk):
            rows.append((t, start, min(chunk, int(size) - start)))
    return np.array(rows, dtype=np.int64).reshape(len(rows), 3)


def _matrices(shapes):
    """(t, b, R, C) per matrix of each tensor (a vector: 1 x n)."""
    rows = []
    for t, shape in enumerate(shapes):
        if len(shape) >= 2:
            r, c = shape[-2], shape[-1]
            count = int(np.prod(shape[:-2], dtype=np.int64))
        else:
            r, c, count = 1, int(np.prod(shape, dtype=np.int64)), 1
        rows.extend((t, b, r, c) for b in range(count) if r * c)
    return np.array(rows, dtype=np.int64).reshape(len(rows), 4)
