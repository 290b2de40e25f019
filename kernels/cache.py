"""Numba's on-disk cache, written safely by processes that compile at once.

Numba keeps every compiled version of a function in one index file beside
their data files. A process adding a version reads the index, picks the
first free data file name, writes the index back and then the data: two
processes adding two versions at once (pytest-xdist workers, the ranks of a
job sharing one cache folder) can both pick the same name, and the index
then names the other one's code, which a later process loads and runs for
the wrong signature (seen: a segmentation fault). `cached` functions take a
lock on the index (``<index>.lock``, ``flock``) around each write; reads
need none (the files are replaced whole).
"""
import hashlib

import numba

try:
    import fcntl
except ImportError:     # Windows: Numba's own writes, unlocked
    fcntl = None


def cached(**options):
    """``numba.njit(cache=True, **options)``, its cache writes locked."""
    def decorate(fn):
        return lock_writes(numba.njit(cache=True, **options)(fn))
    return decorate


def lock_writes(dispatcher):
    """`dispatcher` (a Numba dispatcher made with ``cache=True``), its cache
    writes taking the index's lock; as it was where this Numba keeps its
    cache otherwise than this module expects."""
    cache_file = getattr(getattr(dispatcher, "_cache", None), "_cache_file", None)
    index = getattr(cache_file, "_index_path", None)
    if fcntl is None or index is None:
        return dispatcher
    save = cache_file.save

    def save_locked(key, data):
        try:
            lock = open(index + ".lock", "a")
        except OSError:         # a read-only cache folder: Numba's own handling
            return save(key, data)
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                return save(key, data)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    cache_file.save = save_locked
    return dispatcher


def named(fn, key):
    """`fn` (a closure compiled once per `key`: a variant's loop, a runner),
    its qualified name made its key's own.

    Numba names a compiled function's symbol after its qualified name, its
    argument types and a counter of the compiling process, and its cache
    files after its qualified name. Two closures of one name compiled for
    two keys by two processes can get the same symbol; a process that loads
    both from the cache, or code linked against one of them, can then run
    one for the other (seen: a list runner crashing, docs/design.md). With
    the key's hash in the name their symbols differ, and each has its own
    cache index."""
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    fn.__qualname__ = f"{fn.__qualname__}_{digest}"
    return fn
