"""What an HDF5 file must declare before keras_h5 reads anything from it.

HDF5 can make a reader open other files (external links, virtual datasets, external storage: a
dataset whose bytes live in any file of this host) and can declare arrays and attributes far
larger than the file, which h5py would allocate whole before failing. Keras never writes any of
that, so `check_tree` walks every link first and refuses it, and `read_array` compares an array's
declared size with a budget before reading it.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import os
import struct
from collections.abc import Iterator
from typing import Any, BinaryIO

import h5py
import numpy as np

from fashion_jax.errors import FashionJaxError
from fashion_jax.limits import MAX_CONFIG_JSON_BYTES, check_size, over

# Links, datasets and attributes walked in one file: the chapter's CNN saved with its Adam slots
# has about 40, a 100-layer Sequential under 1,000. A hard-link cycle ends here too.
MAX_H5_OBJECTS = 4096
# The largest attribute Keras writes is the model config (JSON).
MAX_H5_ATTR_BYTES = MAX_CONFIG_JSON_BYTES
# A file less its arrays' stored bytes: headers, attributes and the heap holding their strings.
# Keras's are under 100 KB; HDF5 does not declare a string attribute's length and takes about 5x
# it to read one, so this bounds that too.
MAX_H5_METADATA_BYTES = 4 * MAX_H5_ATTR_BYTES
# All the weight arrays read from one file: 8M float32 weights, 24x the chapter's CNN (333k).
MAX_WEIGHTS_BYTES = 32 << 20
# A whole HDF5 file (or a .keras's weights member): the weights, the optimizer's slots (Adam keeps
# two per weight) and the file's own headers.
MAX_H5_FILE_BYTES = 4 * MAX_WEIGHTS_BYTES + (1 << 20)
# What reading one file may allocate beyond what the process holds (its address space, the one
# limit that libhdf5's own allocations obey): the weights read, HDF5's caches, the strings. A
# damaged string length makes libhdf5 allocate what it declares (4 GB for one flipped byte of a
# Keras .h5, found by fuzzing) before it finds the data missing; under this cap that fails at once.
MAX_READ_MEMORY = 4 * MAX_WEIGHTS_BYTES + (64 << 20)


class UnsafeH5(FashionJaxError, ValueError):
    """HDF5 that points outside itself, or is otherwise not what Keras writes."""


@contextlib.contextmanager
def bounded_memory(limit: int = MAX_READ_MEMORY) -> Iterator[None]:
    """Cap the process's address space at its present size plus `limit` while a file is read; a
    larger allocation then fails (libhdf5: an error, Python: MemoryError, said as the limit).
    Where the process cannot see its own size or set the limit (no /proc, no `resource` on
    Windows), nothing is capped: the reader child (reader_process.py) still keeps a crash apart."""
    try:
        import resource  # POSIX only
    except ImportError:
        resource = None
    size = _vm_size()
    if resource is None or size == 0:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = size + limit
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    if soft != resource.RLIM_INFINITY and soft <= cap:
        yield  # already tighter: leave it
        return
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    except MemoryError:
        raise over("reading it needed more memory; the cap", limit, limit, "MAX_READ_MEMORY",
                   " bytes") from None  # fmt: skip
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _vm_size() -> int:
    """The process's address space in bytes (Linux), 0 where unknown."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def check_heaps(source: str | os.PathLike | BinaryIO) -> None:
    """Walk every global heap collection (where HDF5 keeps string attributes) as libhdf5 would,
    and refuse one it would loop on or over-read: libhdf5 2.0's reader spins forever on an object
    whose size leads to a zero-size header (one flipped byte of a Keras .h5, found by fuzzing)."""
    with contextlib.ExitStack() as stack:
        f = source if hasattr(source, "fileno") else stack.enter_context(open(source, "rb"))
        if os.fstat(f.fileno()).st_size == 0:
            return
        view = stack.enter_context(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
        at = view.find(b"GCOL\x01\x00\x00\x00")
        while at >= 0:
            _check_heap(view, at)
            at = view.find(b"GCOL\x01\x00\x00\x00", at + 8)


def _check_heap(view: mmap.mmap, start: int) -> None:
    if start + 16 > len(view):
        return
    (size,) = struct.unpack_from("<Q", view, start + 8)
    end = start + size
    if size < 16 or end > len(view):
        raise UnsafeH5(f"a string heap at byte {start} declares {size} bytes; the file ends first")
    at = start + 16
    while at + 16 <= end:  # each object: index, references, reserved, size, data (8-aligned)
        index, _, _, length = struct.unpack_from("<HHIQ", view, at)
        need = 16 + -(-length // 8) * 8 if index else length
        if need <= 0 or at + need > end:
            raise UnsafeH5(f"a string heap object at byte {at} overruns its heap (damaged)")
        at += need


def check_tree(f: h5py.File) -> None:
    """Walk every link of `f` (without following any to another file) and every attribute: refuse
    links that are not plain, virtual or externally stored datasets, oversized attributes, more
    than MAX_H5_OBJECTS objects, and more than MAX_H5_METADATA_BYTES besides the arrays."""
    count, stored = 0, 0
    stack: list[tuple[str, Any]] = [("", f)]
    while stack:
        where, group = stack.pop()
        count += _check_attrs(group, where or "/")
        for key in group:
            count += 1
            if count > MAX_H5_OBJECTS:
                raise over("the number of HDF5 objects", count, MAX_H5_OBJECTS, "MAX_H5_OBJECTS")
            name = f"{where}/{key}"
            link = group.get(key, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                raise UnsafeH5(f"{name} links to {link.filename!r}; links out are refused")
            if not isinstance(link, h5py.HardLink):
                raise UnsafeH5(f"{name} is a {type(link).__name__}; Keras writes plain links only")
            obj = group[key]
            if isinstance(obj, h5py.Group):
                stack.append((name, obj))
            elif isinstance(obj, h5py.Dataset):
                _check_dataset(obj, name)
                count += _check_attrs(obj, name)
                stored += obj.id.get_storage_size()
    meta = f.id.get_filesize() - stored
    check_size("the file less its arrays", meta, MAX_H5_METADATA_BYTES, "MAX_H5_METADATA_BYTES")


def _check_dataset(ds: h5py.Dataset, name: str) -> None:
    if ds.is_virtual:
        raise UnsafeH5(f"{name} is a virtual dataset (it maps other files): refused")
    if ds.external:
        raise UnsafeH5(f"{name} stores its bytes in another file ({ds.external[0][0]!r}): refused")


def _check_attrs(obj: Any, where: str) -> int:
    """The number of attributes of `obj`, each checked against MAX_H5_ATTR_BYTES."""
    names = list(obj.attrs)
    for name in names:
        attr = h5py.h5a.open(obj.id, name.encode("utf8"))
        size = math.prod(attr.shape or ()) * attr.dtype.itemsize
        check_size(f"attribute {where}:{name}", size, MAX_H5_ATTR_BYTES, "MAX_H5_ATTR_BYTES")
    return len(names)


def read_attr(obj: Any, name: str) -> Any:
    """An attribute's value, refused when its strings (whose size HDF5 does not declare) are
    longer than MAX_H5_ATTR_BYTES together. A single string (a model config) is read into a
    buffer of that size, never whole: h5py would build a Python string of any length first."""
    attr = h5py.h5a.open(obj.id, name.encode("utf8"))
    info = h5py.check_string_dtype(attr.dtype)
    if info is not None and info.length is None and attr.shape == ():
        kind = h5py.h5t.C_S1.copy()
        kind.set_size(MAX_H5_ATTR_BYTES + 1)
        buffer = np.zeros((), f"S{MAX_H5_ATTR_BYTES + 1}")
        attr.read(buffer, mtype=kind)
        value = buffer.item()
        items = [value]
    else:
        value = obj.attrs[name]
        items = list(value.ravel()) if isinstance(value, np.ndarray) else [value]
    size = sum(len(item) for item in items if isinstance(item, (bytes, str)))
    check_size(f"attribute {name}", size, MAX_H5_ATTR_BYTES, "MAX_H5_ATTR_BYTES")
    return value


class Budget:
    """The bytes left for weight arrays in one file (MAX_WEIGHTS_BYTES)."""

    def __init__(self, limit: int = MAX_WEIGHTS_BYTES) -> None:
        self.left = self.limit = limit

    def read_array(self, obj: Any, name: str) -> np.ndarray:
        """A float array's values, read only when it is a dataset within the budget."""
        if not isinstance(obj, h5py.Dataset):
            raise UnsafeH5(f"{name} is not an array")
        if obj.dtype.kind != "f" or obj.dtype.itemsize > 8:
            raise UnsafeH5(f"{name} holds {obj.dtype}, not floats")
        size = math.prod(obj.shape or ()) * obj.dtype.itemsize
        if size > self.left:
            total = self.limit - self.left + size
            raise over("the weights read", total, self.limit, "MAX_WEIGHTS_BYTES", " bytes")
        self.left -= size
        return np.asarray(obj[()])


def check_fit(kind: str, name: str, units: Any, arrays: list[Any], where: str) -> None:
    """A Dense or Conv2D layer's kernel and bias must have the shapes its config declares (`units`
    or filters last), checked before anything is read: the file cannot make us read more."""
    if kind not in ("Dense", "Conv2D") or not arrays:
        return
    if len(arrays) != 2:
        raise UnsafeH5(f"layer {name!r} holds {len(arrays)} arrays, not kernel, bias")
    kernel, bias = (getattr(a, "shape", None) for a in arrays)
    ndim = 2 if kind == "Dense" else 4
    fits = isinstance(kernel, tuple) and len(kernel) == ndim and kernel[-1] == units
    if not (isinstance(units, int) and fits and bias == (units,)):
        raise UnsafeH5(
            f"{where}: arrays of shapes {kernel} and {bias} do not fit layer {name!r} "
            f"({kind} of {units})"
        )
