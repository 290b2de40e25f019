"""Global gradient-norm clipping in one reduction: `clip_grad_norm_`.

torch's ``torch.nn.utils.clip_grad_norm_`` (same signature, semantics and
messages) for torch tensors (it clips their ``.grad``), NumPy arrays and GPU
arrays (CuPy, Numba, any ``__cuda_array_interface__`` producer; for these
the arrays are the gradients themselves):

* the norm: every tensor of a (device, dtype) group reduced in one compiled
  call on the CPU (on the calling thread below `PARALLEL_FROM` elements, over
  the tensors' addresses and sizes as read; above, one parallel region over
  the many-tensor kernels' address table, cached by layout), one launch on a
  GPU (`kernels.multi_norms`); per-tensor norms then combined as torch
  combines them (the norm of the vector of norms), accumulated in float64.
  The result is torch's: a 0-d tensor of the promoted dtype of the
  gradients' norms on the first gradient's device (a NumPy scalar for NumPy
  and GPU arrays);
* the scale ``min(max_norm / (norm + 1e-6), 1)`` (torch's arithmetic, in the
  norm's dtype) is either applied in place in one more pass, or, with
  ``optimizer=`` a `fastopt.torch` optimizer holding exactly these params,
  handed to that optimizer: its next ``step()`` multiplies each gradient by
  it as it reads it (the shared ``grad_scale`` transform), so the clip costs
  no pass of its own. The gradients in memory then stay unscaled until the
  step (which leaves them so); ``zero_grad()`` drops a pending scale;
* anything the kernels do not take (float16 and bfloat16 gradients, complex
  gradients with a norm other than 2, sparse or non-contiguous ones, tensor
  subclasses, tensors on other devices) goes through torch's own per-group
  code or NumPy.

The host time of a call over thousands of small torch tensors is reading
their properties. The common case, plain dense CPU tensors of one float
dtype, is read in one compiled loop through torch's DLPack exchange API
(`_dense_cpu_group`, `kernels.dlpack`: 2,000 tensors in about 0.2 ms, where
reading dtype, device, contiguity, address and size from Python took 0.6);
anything else takes the general grouping, which names no culprit because it
refuses nothing: what the kernels cannot read goes to torch's code.

`get_total_norm` and `clip_coef` are the two halves, for the functional API:
``fastopt.functional.adam(..., grad_scale=clip_coef(get_total_norm(grads), 1.0))``.
"""
import math
import operator
import sys
import types
import warnings

import numpy as np

from . import _device, _dlpack, _facts, _multi
from .kernels import dlpack, multi_norms

_GRAD, _DTYPE, _DEVICE, _LAYOUT = map(
    operator.attrgetter, ("grad", "dtype", "device", "layout"))
_EPS = 1e-6     # torch's: max_norm / (total_norm + 1e-6)


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False,
                    foreach=None, *, optimizer=None):
    """Clip the gradients' global norm to `max_norm`; returns the norm (see
    the module docstring). torch's signature and semantics; `optimizer`: a
    `fastopt.torch` optimizer whose next step takes the scale instead.

    Example::

        >>> loss.backward()
        >>> fastopt.clip_grad_norm_(model.parameters(), 1.0, optimizer=opt)
        >>> opt.step()      # the clip is fused into the update
    """
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    else:
        is_generator = isinstance(parameters, types.GeneratorType)
        parameters = list(parameters) if not isinstance(parameters, list) else parameters
        if is_generator and not parameters:
            warnings.warn("`parameters` is an empty generator, no gradient clipping "
                          "will occur.", stacklevel=2)
    is_torch = torch is not None and bool(parameters) and isinstance(parameters[0], torch.Tensor)
    grads = ([g for g in map(_GRAD, parameters) if g is not None] if is_torch
             else list(parameters))
    max_norm = float(max_norm)
    groups = _Groups(grads, torch if is_torch else None)
    total = groups.total_norm(float(norm_type), error_if_nonfinite, foreach)
    if not grads:
        return total
    coef = groups.coef(max_norm)
    if optimizer is not None:
        if not is_torch:
            raise TypeError("clip_grad_norm_(): optimizer= takes a fastopt.torch optimizer, "
                            "for torch params")
        defer = getattr(optimizer, "_defer_grad_scale", None)
        if defer is None:
            raise TypeError(f"clip_grad_norm_(): optimizer must be a fastopt.torch "
                            f"optimizer, got {type(optimizer).__name__}")
        if defer(grads, coef, parameters):
            return total
    if coef != 1.0:     # x·1 is x exactly: nothing to write
        groups.scale(coef, foreach)
    return total


def get_total_norm(tensors, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    """The norm of `tensors` (gradients themselves, not params) viewed as one
    vector, as ``torch.nn.utils.get_total_norm``: a 0-d torch tensor for
    torch tensors, else a NumPy scalar."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(tensors, torch.Tensor):
        tensors = [tensors]
    tensors = list(tensors)
    is_torch = torch is not None and bool(tensors) and isinstance(tensors[0], torch.Tensor)
    return _Groups(tensors, torch if is_torch else None).total_norm(
        float(norm_type), error_if_nonfinite, foreach)


def clip_coef(total_norm, max_norm):
    """torch's factor ``min(max_norm / (total_norm + 1e-6), 1)``, computed as
    torch computes it in the norm's dtype, as a Python float (NaN stays NaN)."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(total_norm, torch.Tensor):
        dtype = _device._torch_dtypes(torch).get(total_norm.dtype)
        if dtype not in _facts.CODES:   # 16-bit: torch's own ops, in its arithmetic
            return float(torch.clamp(float(max_norm) / (total_norm.detach().cpu() + _EPS),
                                     max=1.0))
        return _coef(dtype.type(float(total_norm)), max_norm)
    t = np.asarray(total_norm)
    dtype = t.dtype.type if t.dtype.kind == "f" else np.float64
    return _coef(dtype(t), max_norm)


def _coef(total, max_norm):
    """`clip_coef` of `total`, a NumPy float32 or float64 scalar: torch's
    float32 or float64 ops, each rounded as torch rounds it (its scalars cast
    to the tensor's dtype; ``max_norm / t`` is its rdiv, ``(1 / t) * max_norm``)."""
    dtype = type(total)
    coef = (dtype(1.0) / (total + dtype(_EPS))) * dtype(max_norm)
    return float(coef) if coef != coef or coef < 1.0 else 1.0


# -- the groups of one call ----------------------------------------------------
def _format(p):
    return f"{p:g}" if math.isfinite(p) else ("inf" if p > 0 else "-inf")


class _Groups:
    """A call's gradients by (device, dtype), each with how it is reduced:
    "host" (CPU kernels on NumPy views), "device" (CUDA kernels) or
    "fallback" (torch's or NumPy's own code)."""

    def __init__(self, grads, torch):
        self.grads, self.torch = grads, torch
        self.groups = _torch_groups(grads, torch) if torch is not None else _array_groups(grads)

    def total_norm(self, p, error_if_nonfinite, foreach):
        grads, torch = self.grads, self.torch
        if not grads:
            return torch.tensor(0.0) if torch is not None else np.float32(0.0)
        if (p == math.inf or p == -math.inf or p < 0) and any(
                [g.has_empty() for g in self.groups]):
            foreach_inf = (p == math.inf and foreach is not False and torch is not None)
            raise RuntimeError(
                "_foreach_norm cannot compute the infinity norm on an empty tensor "
                "because the operation does not have an identity" if foreach_inf else
                f"linalg.vector_norm cannot compute the {_format(p)} norm on an empty "
                "tensor because the operation does not have an identity")
        mode = multi_norms.mode_of(p)
        if foreach and torch is not None:
            for g in self.groups:
                if g.kind == "fallback" and g.device_type not in ("cpu", "cuda"):
                    raise RuntimeError(f"foreach=True was passed, but can't use the foreach "
                                       f"API on {g.device_type} tensors")
        # Each group's norms rounded to its dtype, as torch's per-group norms are
        norms = [_rounded(g.norms(mode, p), g.norm_dtype, torch) for g in self.groups]
        total = multi_norms.combine(norms[0] if len(norms) == 1 else np.concatenate(norms),
                                    mode, p)
        if torch is not None:
            dtype = self.groups[0].norm_dtype
            for g in self.groups[1:]:
                dtype = torch.promote_types(dtype, g.norm_dtype)
            result = torch.tensor(total, dtype=dtype)
            self.result_dtype = dtype
            np_dtype = _device._torch_dtypes(torch).get(dtype)
            if self.groups[0].device_type != "cpu":
                result = result.to(grads[0].device)
        else:
            np_dtype = np.result_type(*[g.norm_dtype for g in self.groups])
            result = np_dtype.type(total)
        # the norm as the result holds it, for `coef` (16-bit: torch's ops)
        self.value = (np_dtype.type(total) if np_dtype in _facts.CODES else result)
        if error_if_nonfinite and not math.isfinite(float(result)):
            raise RuntimeError(
                f"The total norm of order {p} for gradients from `parameters` is "
                "non-finite, so it cannot be clipped. To disable this error and scale "
                "the gradients by the non-finite norm anyway, set "
                "`error_if_nonfinite=False`")
        return result

    def coef(self, max_norm):
        """`clip_coef` of the total norm `total_norm` returned."""
        if isinstance(self.value, np.generic):
            return _coef(self.value, max_norm)
        return clip_coef(self.value, max_norm)

    def scale(self, coef, foreach):
        for g in self.groups:
            g.scale(coef, getattr(self, "result_dtype", None))
        if self.torch is not None:
            self.torch.autograd.graph.increment_version(self.grads)


def _rounded(norms, dtype, torch):
    """`norms` (float64) rounded to `dtype` (a torch or NumPy dtype) and back."""
    if torch is not None:
        dtype = _device._torch_dtypes(torch).get(dtype, np.float32)
    return norms if np.dtype(dtype) == np.float64 else norms.astype(dtype).astype(np.float64)


def _size(x):
    return x.numel() if hasattr(x, "numel") and callable(x.numel) else x.size


PARALLEL_FROM = 1 << 20


class _Group:
    """Tensors of one (device, dtype): `tensors` as given, `arrays` what the
    kernels read (NumPy views, real views of complex tensors)."""

    def __init__(self, kind, tensors, norm_dtype, device_type="cpu", torch=None,
                 addresses=None, sizes=None, dtype=None, device=None, stream=0, views=None):
        self.kind, self.tensors, self.norm_dtype = kind, tensors, norm_dtype
        self.device_type, self.torch = device_type, torch
        if addresses is not None:   # int64 arrays, one entry a tensor
            addresses = np.asarray(addresses, np.int64)
            sizes = np.asarray(sizes, np.int64)
        self.addresses, self.sizes, self.dtype = addresses, sizes, dtype
        self.device, self.stream, self.views = device, stream, views

    def has_empty(self):
        """Whether a tensor of the group has no element."""
        if self.sizes is not None:
            return bool((self.sizes == 0).any())
        return any([_size(t) == 0 for t in self.tensors])

    def listed(self):
        """Whether the host kernels take the tensors as listed, with no table,
        on the calling thread (`PARALLEL_FROM`)."""
        listed = self.__dict__.get("_listed")
        if listed is None:
            listed = self._listed = (self.kind == "host"
                                     and int(self.sizes.sum()) < PARALLEL_FROM)
        return listed

    def table(self):
        return _table(self.addresses.tolist(), self.sizes.tolist(), self.dtype.itemsize,
                      self.kind == "device")

    def norms(self, mode, p):
        if self.listed():
            return multi_norms.norms_list(self.addresses, self.sizes, _multi.CHUNK,
                                          _facts.LIKE[self.dtype], mode, p)
        if self.kind == "host":
            entry = self.table()
            return multi_norms.norms_cpu(entry["addrs"], entry["chunks"], entry["parts"],
                                         _facts.LIKE[self.dtype], len(self.sizes), mode, p)
        if self.kind == "device":
            return self._device_norms(mode, p)
        return self._fallback_norms(p)

    def scale(self, coef, dtype=None):
        if self.listed():
            multi_norms.scale_list(self.addresses, self.sizes, _facts.LIKE[self.dtype], coef)
        elif self.kind == "host":
            entry = self.table()
            parts = entry["parts"] if entry["disjoint"] else entry["serial"]
            multi_norms.scale_cpu(entry["addrs"], entry["chunks"], parts,
                                  _facts.LIKE[self.dtype], coef)
        elif self.kind == "device":
            self._device_scale(coef)
        elif self.torch is not None:
            # torch's factor: a tensor of the total norm's dtype
            factor = self.torch.tensor(coef, dtype=dtype, device=self.tensors[0].device)
            for t in self.tensors:
                t.mul_(factor)
        else:
            for t in self.tensors:
                t *= t.dtype.type(coef) if t.dtype.kind != "c" else coef

    # -- GPU ---------------------------------------------------------------
    def _launch_table(self):
        from numba import cuda
        entry = self.table()
        if self.views is not None:     # the simulator: arrays, not addresses
            return self.views, cuda.to_device(entry["chunks"]), entry
        key = ("device", self.device)
        if key not in entry:
            entry[key] = (cuda.to_device(entry["addrs"], stream=self.stream),
                          cuda.to_device(entry["chunks"], stream=self.stream))
            (self.stream or cuda.default_stream()).synchronize()
        return (*entry[key], entry)

    def _device_norms(self, mode, p):
        from numba import cuda

        from .kernels import cuda as kcuda
        with _device.on_device(self.device):
            table, chunks, entry = self._launch_table()
            nchunks = len(entry["chunks"])
            out = cuda.device_array(max(nchunks, 1), np.float64, stream=self.stream)
            if nchunks:
                blocks, threads = kcuda.launch_config(nchunks * kcuda.THREADS)
                multi_norms.cuda_kernel("norms", threads)[blocks, threads, self.stream](
                    table, chunks, self.dtype.type(0), mode, float(p), out)
            partial = out.copy_to_host(stream=self.stream)[:nchunks]
            if self.stream:
                self.stream.synchronize()
        return multi_norms.tensor_norms(partial, entry["chunks"], len(self.sizes), mode, p)

    def _device_scale(self, coef):
        from .kernels import cuda as kcuda
        with _device.on_device(self.device):
            table, chunks, entry = self._launch_table()
            nchunks = len(entry["chunks"])
            if nchunks:
                threads = kcuda.launch_config(nchunks * kcuda.THREADS)[1]
                # overlapping tensors (one buffer listed twice): one block, in order
                blocks = kcuda.launch_config(nchunks * kcuda.THREADS)[0] \
                    if entry["disjoint"] else 1
                multi_norms.cuda_kernel("scale", threads)[blocks, threads, self.stream](
                    table, chunks, self.dtype.type(coef))

    # -- torch's or NumPy's own code ----------------------------------------
    def _fallback_norms(self, p):
        if self.torch is not None:
            torch = self.torch
            out = [torch.linalg.vector_norm(t, p) for t in self.tensors]
            return np.array([float(n) for n in out], np.float64)
        return np.array([_numpy_norm(np.asarray(t), p) for t in self.tensors], np.float64)


def _numpy_norm(x, p):
    a = np.abs(x.ravel()).astype(np.float64)
    if p == math.inf:
        return float(a.max())
    if p == -math.inf:
        return float(a.min())
    if p == 0:
        return float(np.count_nonzero(a))
    return float(np.sum(a ** p) ** (1.0 / p))


_tables = _multi._Cache()


def _table(addresses, sizes, itemsize, device):
    """The address table of one group (`kernels.multi_norms`), cached by
    layout: ``addrs`` (T,), ``chunks``, ``parts``, and whether the tensors
    are disjoint (if not, the scale runs on one thread / one block, in order,
    as torch's loop does)."""
    key = (device, itemsize, _multi.CHUNK, tuple(addresses), tuple(sizes))
    entry = _tables.hit(key)
    if entry is None:
        n = len(sizes)
        addr = np.asarray(addresses, np.int64).reshape(1, n)
        size = np.asarray(sizes, np.int64)
        built = _multi._build_table(addr, size, [0], np.arange(n, dtype=np.int64))
        addrs = np.ascontiguousarray(built["addrs"][:, 0])
        chunks = built["chunks"]
        # A reduction reads each element once: below `PARALLEL_FROM` elements
        # the calling thread alone is faster than a parallel region (2,000
        # tensors of 100 float32 on a shared 2-core machine: 0.12 ms alone,
        # 8-20 ms in a region whose threads compete with other processes);
        # the host takes those without a table (`_Group.listed`), GPUs not.
        parts = (_multi._parts(chunks) if int(size.sum()) >= PARALLEL_FROM
                 else np.array([0, len(chunks)], np.int64))
        order = np.argsort(addr[0], kind="stable")
        ends = addr[0][order] + size[order] * itemsize
        starts = addr[0][order]
        nonempty = size[order] > 0
        starts, ends = starts[nonempty], ends[nonempty]
        disjoint = bool(np.all(starts[1:] >= np.maximum.accumulate(ends)[:-1])) \
            if starts.size > 1 else True
        entry = {"addrs": addrs, "chunks": chunks, "parts": parts, "disjoint": disjoint,
                 "serial": np.array([0, len(chunks)], np.int64)}
        _tables.store(key, entry, addrs.nbytes + chunks.nbytes + parts.nbytes)
    return entry


# -- grouping ------------------------------------------------------------------
def _torch_groups(grads, torch):
    """The torch gradients by (device, dtype), in order of first appearance."""
    if not grads:
        return []
    group = _dense_cpu_group(grads, torch)
    if group is not None:
        return [group]
    devices, dtypes = list(map(_DEVICE, grads)), list(map(_DTYPE, grads))
    members = {}
    for key, g in zip(zip(devices, dtypes), grads):
        members.setdefault(key, []).append(g)
    known = _device._torch_dtypes(torch)
    tensor = torch.Tensor
    groups = []
    for (device, dtype), tensors in members.items():
        norm_dtype = dtype.to_real() if dtype.is_complex else dtype
        np_dtype = known.get(norm_dtype)
        # Plain dense tensors (a subclass may hold no memory of its own)
        usable = (np_dtype in _facts.CODES and device.type in ("cpu", "cuda")
                  and list(map(type, tensors)).count(tensor) == len(tensors)
                  and list(map(_LAYOUT, tensors)).count(torch.strided) == len(tensors)
                  and all(map(tensor.is_contiguous, tensors))
                  and not (dtype.is_complex and any(map(tensor.is_conj, tensors)))
                  and not (device.type == "cuda" and _device.simulated()))
        if usable:
            # the memory the kernels read: complex tensors' real views
            # (|z|² = re² + im²: their 2-norm; other norms: torch's)
            real = [torch.view_as_real(t) for t in tensors] if dtype.is_complex else tensors
            try:
                addresses = np.fromiter(map(tensor.data_ptr, real), np.int64, len(real))
            except RuntimeError:    # no storage of its own
                usable = False
            else:
                sizes = np.fromiter(map(tensor.numel, real), np.int64, len(real))
                usable = addresses.all() or not sizes[addresses == 0].any()
        if not usable:
            groups.append(_Group("fallback", tensors, norm_dtype, device.type, torch))
            continue
        cls = _ComplexGroup if dtype.is_complex else _Group
        if device.type == "cpu":
            groups.append(cls("host", tensors, norm_dtype, "cpu", torch,
                              addresses, sizes, np_dtype))
        else:
            groups.append(cls("device", tensors, norm_dtype, "cuda", torch, addresses,
                              sizes, np_dtype, device.index,
                              _device.torch_stream(device.index)))
    return groups


def _dense_cpu_group(grads, torch):
    """The common case: plain (no subclass), contiguous CPU tensors, all
    float32 or all float64, as one host group, their addresses and sizes
    read in one compiled loop through torch's DLPack exchange API
    (`kernels.dlpack`); None otherwise, or with a torch that has no such API
    (`_torch_groups` then groups them)."""
    api = _dlpack.reader(torch.Tensor)
    n = len(grads)
    if api is None or list(map(type, grads)).count(torch.Tensor) != n:
        return None
    first, word, addresses, sizes = dlpack.read_dense(
        np.fromiter(map(id, grads), np.int64, n), *api)
    dtype = _dlpack.torch_dtypes(torch).get(word)
    np_dtype = _device._torch_dtypes(torch).get(dtype)
    if first >= 0 or np_dtype not in _facts.CODES:
        return None
    return _Group("host", grads, dtype, "cpu", torch, addresses, sizes, np_dtype)


class _ComplexGroup(_Group):
    """Complex torch tensors: the 2-norm and the scale on their real views
    (the kernels'; `addresses` and `sizes` are theirs), any other norm by torch."""

    def norms(self, mode, p):
        if mode == multi_norms.L2:
            return super().norms(mode, p)
        return self._fallback_norms(p)


def _array_groups(arrays):
    """NumPy and GPU arrays by (place, dtype)."""
    members = {}
    for k, a in enumerate(arrays):
        where = _facts.place(a)
        if where is None:
            raise TypeError(f"clip_grad_norm_(): tensors[{k}] is {_facts.describe(a)}; "
                            "expected NumPy arrays, GPU arrays or torch params")
        if where == _facts.HOST:
            a = np.asarray(a)
            usable = a.dtype in _facts.CODES and a.flags.c_contiguous and a.flags.writeable
            key = ("host" if usable else "fallback", a.dtype)
            members.setdefault(key, []).append(a)
        else:
            info = _device.describe(f"tensors[{k}]", a)
            usable = info.dtype in _facts.CODES and info.contiguous and not info.readonly
            if not usable:
                raise TypeError(f"clip_grad_norm_(): tensors[{k}] is a {info.dtype} GPU "
                                "array that is not contiguous and writeable float32/float64")
            members.setdefault(("device", info.dtype, info.device), []).append(info)
    groups = []
    for key, items in members.items():
        kind, dtype = key[0], key[1]
        norm_dtype = np.dtype(dtype).type(0).real.dtype
        if kind == "host":
            groups.append(_Group("host", items, norm_dtype,
                                 addresses=[a.ctypes.data for a in items],
                                 sizes=[a.size for a in items], dtype=dtype))
        elif kind == "fallback":
            groups.append(_Group("fallback", items, norm_dtype))
        else:
            views = [_device.flat_view(i) for i in items] if _device.simulated() else None
            groups.append(_Group("device", [i.owner for i in items], norm_dtype,
                                 "cuda", addresses=[i.ptr for i in items],
                                 sizes=[i.size for i in items], dtype=dtype,
                                 device=key[2], stream=_device.stream_of(items[0]),
                                 views=views))
    return groups
