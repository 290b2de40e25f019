"""fastopt.bench: the benchmark harness (``python -m fastopt.bench``).

For each optimizer, size and dtype it times fastopt's fused update beside a
memory-floor kernel that moves exactly the same bytes, the device's copy
bandwidth, and the peers that are installed (plain NumPy, torch.optim in its
three implementations, and on a GPU CuPy and optax), all in the same run. The
protocol is in ``benchmarks/README.md``.
"""


def run(**options):
    """Run the benchmark and return its report (the dict written as JSON).

    Options are those of `fastopt.bench.runner.run`. Imported lazily so that
    ``import fastopt.bench`` stays cheap.

    Example::

        >>> from fastopt.bench import run
        >>> report = run(optimizers=["adam"], sizes=[10_000], repeats=10,
        ...              cold_start=(), progress=False)
        >>> report["results"][0]["gbps"] > 0
        True
    """
    from .runner import run as _run
    return _run(**options)


__all__ = ["run"]
