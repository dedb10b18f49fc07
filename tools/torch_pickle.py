"""The pickle part of a torch state-dict file, read without torch: shared by the importers that convert PyTorch
weights (tools/import_efficientnet_lite0.py reads the legacy pre-1.6 format, tools/import_aisfx.py the zip
format; each keeps its own container handling and hands the pickle stream to `RestrictedUnpickler`).

A pickle runs code through the globals it names, so `RestrictedUnpickler` resolves only what a state dict of
tensors needs: `collections.OrderedDict`, torch's two tensor-rebuild functions and the storage type names.
Every other global is refused with `FormatError`, except those the caller allows by name (`extra_globals`,
e.g. the numpy scalars of aiSFX's dataset table). Storages arrive as persistent ids and are collected in
`unpickler.storages` (key -> `Storage`); the caller reads their bytes from the container, sets each
`Storage.array`, then calls `Tensor.materialise` on the values of the state dict.
"""

from __future__ import annotations

import collections
import pickle

STORAGE_DTYPES = {
    "FloatStorage": "f4", "DoubleStorage": "f8", "HalfStorage": "f2", "LongStorage": "i8", "IntStorage": "i4",
    "ShortStorage": "i2", "CharStorage": "i1", "ByteStorage": "u1", "BoolStorage": "?",
}


class FormatError(Exception):
    """The file is not a torch state dict this reader understands (one line saying what was found)."""


class Storage:
    """A storage named by the pickle; the caller sets `array` (a 1-D numpy array of `numel` values of `dtype`)
    from the container's bytes."""

    def __init__(self, dtype: str, numel: int):
        self.dtype, self.numel, self.array = dtype, numel, None


class View:
    """Part of a larger storage (`offset`, `size` values into `root`), which an old torch could save apart."""

    def __init__(self, root: Storage, offset: int, size: int):
        self.root, self.offset, self.size = root, offset, size

    @property
    def array(self):
        return self.root.array[self.offset:self.offset + self.size]


class Tensor:
    """A tensor waiting for its storage: `torch._utils._rebuild_tensor(_v2)`'s arguments."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, int(offset), tuple(size), tuple(stride)

    def materialise(self):
        """The tensor as a numpy array (a copy).

        Raises:
            FormatError: the offset, shape and strides reach outside the storage (as_strided would read
                memory that is not the storage's).
        """
        import numpy as np

        data = self.storage.array
        if not self.size:
            return np.array(data[self.offset])
        # A view with the recorded strides (arrays may be non-contiguous, e.g. TensorFlow-ordered), copied out.
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
        if self.offset < 0 or last >= data.size or any(s < 0 for s in self.stride):
            raise FormatError(f"a tensor of shape {self.size} reaches outside its storage of {data.size} values")
        view = np.lib.stride_tricks.as_strided(data[self.offset:], shape=self.size,
                                               strides=[s * data.itemsize for s in self.stride], writeable=False)
        return np.array(view)


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, backward_hooks=None, *rest):
    return Tensor(storage, offset, size, stride)


def _rebuild_tensor(storage, offset, size, stride):
    return Tensor(storage, offset, size, stride)


class _StorageType:
    def __init__(self, name):
        self.name = name


_KNOWN = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Builds only dicts of tensors (plus `extra_globals`): any other global (the way a pickle runs code) is
    refused with `FormatError`.

    Args:
        file: the pickle stream.
        extra_globals: `{(module, name): object}` the caller's files legitimately name besides a state dict's.

    Raises (from `load`):
        FormatError: a global that is neither known nor allowed, or a persistent id that is not a storage of a
            known type.
    """

    def __init__(self, file, extra_globals: dict | None = None):
        super().__init__(file)
        self.storages: dict = {}
        self.extra_globals = dict(extra_globals or {})

    def find_class(self, module, name):
        if (module, name) in _KNOWN:
            return _KNOWN[module, name]
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        if (module, name) in self.extra_globals:
            return self.extra_globals[module, name]
        raise FormatError(f"the pickle asks for {module}.{name}, which a state dict of tensors never needs")

    def persistent_load(self, saved_id):
        # ('storage', type, key, location, numel) in the zip format; the legacy one adds a view (or None).
        if not isinstance(saved_id, tuple) or len(saved_id) not in (5, 6) or saved_id[0] != "storage":
            raise FormatError(f"unknown persistent id {saved_id!r:.80}")
        storage_type, key, _location, numel = saved_id[1:5]
        view = saved_id[5] if len(saved_id) == 6 else None
        if not isinstance(storage_type, _StorageType):
            raise FormatError(f"storage of unknown type {storage_type!r:.80}")
        if key not in self.storages:
            self.storages[key] = Storage(STORAGE_DTYPES[storage_type.name], int(numel))
        root = self.storages[key]
        if view is None:
            return root
        # (view key, offset, size): part of a larger storage.
        _view_key, offset, size = view
        return View(root, int(offset), int(size))
