"""Read a PyTorch state dict into numpy arrays without PyTorch and without unpickling freely.

``torch.save`` writes pickles whose globals name torch classes. This reader resolves only the
few a state dict needs (``torch._utils._rebuild_tensor_v2``, the ``torch.*Storage`` types and
``collections.OrderedDict``) to harmless stand-ins of its own; any other global is refused
before anything is called, so a hostile checkpoint cannot run code here.

Both layouts are read: the legacy one (several pickles in a row, then each storage as an int64
element count and its bytes) and the zip one (``<prefix>/data.pkl`` and
``<prefix>/data/<key>``).
"""

import collections
import io
import pickle
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np

from classification.exceptions import ModelRegistrationError

# The legacy layout starts with this number, pickled (torch.serialization.MAGIC_NUMBER).
LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

# torch.<Name>Storage -> element type. bfloat16 has no numpy type and is refused.
STORAGE_DTYPES = {
    "DoubleStorage": "f8",
    "FloatStorage": "f4",
    "HalfStorage": "f2",
    "LongStorage": "i8",
    "IntStorage": "i4",
    "ShortStorage": "i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}

# The largest storage or tensor believed: far above any classifier, far below a memory bomb.
MAX_ELEMENTS = 1 << 31


@dataclass(frozen=True)
class _StorageType:
    """What ``torch.FloatStorage`` and friends resolve to: a name and a dtype, never callable."""

    name: str
    dtype: str

    def __call__(self, *args: object, **kwargs: object) -> None:
        raise ModelRegistrationError(f"The checkpoint calls torch.{self.name}; refused.")


@dataclass
class _Storage:
    """A storage the pickle refers to; its bytes are filled in after the pickle is read."""

    key: str
    dtype: str
    numel: int
    data: np.ndarray | None = None


@dataclass(frozen=True)
class _TensorRef:
    """What ``_rebuild_tensor_v2`` returns here: where a tensor's elements are, no data yet."""

    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def __setstate__(self, state: object) -> None:
        # A BUILD on a tensor would reach here; a state dict never does that.
        raise ModelRegistrationError("The checkpoint sets state on a tensor; refused.")


def _int_tuple(value: object, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple) or not all(
        isinstance(item, int) and not isinstance(item, bool) and item >= 0 for item in value
    ):
        raise ModelRegistrationError(f"The checkpoint's tensor {what} is not a tuple of integers.")
    return value


def _rebuild_tensor_v2(
    storage: object, storage_offset: object, size: object, stride: object, *_rest: object
) -> _TensorRef:
    # The other arguments (requires_grad, backward hooks, metadata) do not matter for inference.
    if not isinstance(storage, _Storage):
        raise ModelRegistrationError(
            "The checkpoint rebuilds a tensor from something else than a storage."
        )
    if not isinstance(storage_offset, int) or storage_offset < 0:
        raise ModelRegistrationError("The checkpoint's tensor offset is not an integer.")
    size_tuple, stride_tuple = _int_tuple(size, "size"), _int_tuple(stride, "stride")
    if len(size_tuple) != len(stride_tuple):
        raise ModelRegistrationError("The checkpoint's tensor size and stride do not match.")
    return _TensorRef(storage=storage, offset=storage_offset, size=size_tuple, stride=stride_tuple)


def _allowed_global(module: str, name: str) -> object:
    if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
        return _rebuild_tensor_v2
    if (module, name) == ("collections", "OrderedDict"):
        return collections.OrderedDict
    if module == "torch" and name in STORAGE_DTYPES:
        return _StorageType(name=name, dtype=STORAGE_DTYPES[name])
    raise ModelRegistrationError(
        f"The checkpoint refers to {module}.{name}, which a state dict of tensors never needs; "
        "it was not loaded."
    )


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that knows only the globals of a state dict, or none at all."""

    def __init__(
        self,
        file: IO[bytes],
        *,
        persistent_load: Callable[[object], object] | None,
        allow_globals: bool,
    ) -> None:
        super().__init__(file)
        self._persistent = persistent_load
        self._allow_globals = allow_globals

    def find_class(self, module: str, name: str) -> Any:
        if not self._allow_globals:
            raise ModelRegistrationError(
                f"The checkpoint refers to {module}.{name} where it needs no global; refused."
            )
        return _allowed_global(module, name)

    def persistent_load(self, pid: object) -> object:
        if self._persistent is None:
            raise ModelRegistrationError("The checkpoint refers to storage where it needs none.")
        return self._persistent(pid)


@dataclass
class _StorageTable:
    """The storages a pickle referred to, by key; the same key is one storage."""

    storages: dict[str, _Storage] = field(default_factory=dict)
    # Legacy views: (view key, element offset, element count) into a root storage.
    views: dict[str, tuple[str, int, int]] = field(default_factory=dict)

    def reference(self, key: object, storage_type: object, numel: object) -> _Storage:
        if not isinstance(storage_type, _StorageType):
            raise ModelRegistrationError("The checkpoint names a storage type it may not.")
        if not isinstance(key, str) or not isinstance(numel, int) or not 0 <= numel <= MAX_ELEMENTS:
            raise ModelRegistrationError("The checkpoint's storage reference is malformed.")
        storage = self.storages.get(key)
        if storage is None:
            storage = self.storages[key] = _Storage(key=key, dtype=storage_type.dtype, numel=numel)
        elif storage.dtype != storage_type.dtype or storage.numel != numel:
            raise ModelRegistrationError(f"The checkpoint describes storage {key} in two ways.")
        return storage


def _unpickle(
    file: IO[bytes],
    *,
    persistent_load: Callable[[object], object] | None = None,
    allow_globals: bool = False,
) -> object:
    try:
        return _RestrictedUnpickler(
            file, persistent_load=persistent_load, allow_globals=allow_globals
        ).load()
    except ModelRegistrationError:
        raise
    except Exception as exc:  # a malformed pickle raises many kinds of errors
        raise ModelRegistrationError(f"The checkpoint is not a readable state dict: {exc}") from exc


def _storage_id(pid: object) -> tuple[Any, ...]:
    """A persistent id ('storage', type, key, location, numel[, view]); nothing else is known."""
    if not isinstance(pid, tuple) or len(pid) not in (5, 6) or pid[0] != "storage":
        raise ModelRegistrationError(f"The checkpoint refers to {pid!r}, which is not a storage.")
    return pid


def _tensor_array(ref: _TensorRef) -> np.ndarray:
    data = ref.storage.data
    if data is None:
        raise ModelRegistrationError(f"The checkpoint has no data for storage {ref.storage.key}.")
    count = int(np.prod(ref.size, dtype=np.int64)) if ref.size else 1
    if count > MAX_ELEMENTS:
        raise ModelRegistrationError("A tensor of the checkpoint is implausibly large.")
    if count:
        last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride, strict=True))
        if last >= data.size:
            raise ModelRegistrationError(
                f"A tensor of the checkpoint reaches past the end of storage {ref.storage.key}."
            )
    itemsize = data.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        data[ref.offset :] if count else data[:0],
        shape=ref.size,
        strides=tuple(s * itemsize for s in ref.stride),
        writeable=False,
    )
    # Native byte order and a copy of its own: nothing aliases the file's buffer afterwards.
    return np.array(view, dtype=data.dtype.newbyteorder("="), order="C", copy=True)


def _state_dict_arrays(result: object) -> dict[str, np.ndarray]:
    if not isinstance(result, dict):
        raise ModelRegistrationError("The checkpoint does not hold a state dict.")
    arrays: dict[str, np.ndarray] = {}
    for name, value in result.items():
        if not isinstance(name, str) or not isinstance(value, _TensorRef):
            raise ModelRegistrationError(
                f"The checkpoint's entry {name!r} is not a named tensor; only state dicts are read."
            )
        arrays[name] = _tensor_array(value)
    return arrays


def _read_legacy(file: IO[bytes]) -> dict[str, np.ndarray]:
    if _unpickle(file) != LEGACY_MAGIC_NUMBER:
        raise ModelRegistrationError("The file is not a PyTorch checkpoint (no magic number).")
    if _unpickle(file) != LEGACY_PROTOCOL_VERSION:
        raise ModelRegistrationError("The checkpoint has an unknown legacy protocol version.")
    sys_info = _unpickle(file)
    little_endian = not isinstance(sys_info, dict) or sys_info.get("little_endian", True)
    order: Literal["<", ">"] = "<" if little_endian else ">"

    table = _StorageTable()

    def persistent_load(pid: object) -> object:
        storage_id = _storage_id(pid)
        _, storage_type, key, _location, numel = storage_id[:5]
        view = storage_id[5] if len(storage_id) == 6 else None
        if view is None:
            return table.reference(key, storage_type, numel)
        # A view (view key, offset, size) into the root storage ``key``: same bytes, shifted.
        if not (isinstance(view, tuple) and len(view) == 3):
            raise ModelRegistrationError("The checkpoint's storage view is malformed.")
        view_key, view_offset, view_size = view
        root = table.reference(key, storage_type, numel)
        if not (isinstance(view_offset, int) and isinstance(view_size, int)) or (
            view_offset < 0 or view_size < 0 or view_offset + view_size > root.numel
        ):
            raise ModelRegistrationError("The checkpoint's storage view lies outside its storage.")
        table.views[str(view_key)] = (key, view_offset, view_size)
        return _Storage(key=str(view_key), dtype=root.dtype, numel=view_size)

    refs = _unpickle(file, persistent_load=persistent_load, allow_globals=True)
    keys = _unpickle(file)
    if (
        not isinstance(keys, list)
        or set(keys) != set(table.storages)
        or len(keys) != len(set(keys))
    ):
        raise ModelRegistrationError("The checkpoint's storage list does not match its tensors.")
    for key in keys:
        storage = table.storages[key]
        header = file.read(8)
        if len(header) != 8:
            raise ModelRegistrationError("The checkpoint is truncated (storage header).")
        (numel,) = struct.unpack(f"{order}q", header)
        if numel != storage.numel:
            raise ModelRegistrationError(
                f"Storage {key} holds {numel} elements where the pickle says {storage.numel}."
            )
        dtype = np.dtype(storage.dtype).newbyteorder(order)
        raw = file.read(numel * dtype.itemsize)
        if len(raw) != numel * dtype.itemsize:
            raise ModelRegistrationError("The checkpoint is truncated (storage data).")
        storage.data = np.frombuffer(raw, dtype=dtype)
    _resolve_views(refs, table)
    return _state_dict_arrays(refs)


def _resolve_views(refs: object, table: _StorageTable) -> None:
    if not table.views or not isinstance(refs, dict):
        return
    for value in refs.values():
        if isinstance(value, _TensorRef) and value.storage.key in table.views:
            root_key, offset, size = table.views[value.storage.key]
            root_data = table.storages[root_key].data
            assert root_data is not None  # every root storage was read above
            value.storage.data = root_data[offset : offset + size]


def _read_zip(file: IO[bytes]) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(file) as archive:
        pickles = [name for name in archive.namelist() if name.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise ModelRegistrationError("The zip checkpoint has no single data.pkl.")
        prefix = pickles[0][: -len("data.pkl")]
        names = set(archive.namelist())
        order: Literal["<", ">"] = "<"
        if f"{prefix}byteorder" in names:
            byteorder = archive.read(f"{prefix}byteorder").decode("ascii", "replace").strip()
            if byteorder not in ("little", "big"):
                raise ModelRegistrationError(
                    f"The checkpoint's byte order {byteorder!r} is unknown."
                )
            order = "<" if byteorder == "little" else ">"
        table = _StorageTable()

        def persistent_load(pid: object) -> object:
            _, storage_type, key, _location, numel = _storage_id(pid)[:5]
            return table.reference(key, storage_type, numel)

        refs = _unpickle(
            io.BytesIO(archive.read(pickles[0])),
            persistent_load=persistent_load,
            allow_globals=True,
        )
        for key, storage in table.storages.items():
            member = f"{prefix}data/{key}"
            if member not in names:
                raise ModelRegistrationError(f"The zip checkpoint lacks {member}.")
            dtype = np.dtype(storage.dtype).newbyteorder(order)
            info = archive.getinfo(member)
            if info.file_size != storage.numel * dtype.itemsize:
                raise ModelRegistrationError(f"{member} does not hold {storage.numel} elements.")
            storage.data = np.frombuffer(archive.read(member), dtype=dtype)
    return _state_dict_arrays(refs)


def state_dict_read(*, path: Path) -> dict[str, np.ndarray]:
    """The tensors of the PyTorch state dict saved at ``path``, by name, as numpy arrays.

    Reads the legacy and the zip layout. Raises ModelRegistrationError for anything else,
    including a pickle that names any global beyond those of a plain state dict.
    """
    with Path(path).open("rb") as file:
        if zipfile.is_zipfile(file):
            file.seek(0)
            return _read_zip(file)
        file.seek(0)
        return _read_legacy(file)
