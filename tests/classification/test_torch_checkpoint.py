"""The restricted PyTorch checkpoint reader: exact values from both layouts, nothing run.

The checkpoints here are written byte by byte by the tests (pickle opcodes and struct), with
the torch classes faked by name, so no PyTorch is needed to make or read them.
"""

import collections
import io
import os
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from classification.exceptions import ModelRegistrationError
from classification.registry.sources.torch_checkpoint import (
    LEGACY_MAGIC_NUMBER,
    LEGACY_PROTOCOL_VERSION,
    state_dict_read,
)


class FakeGlobal:
    """Pickled as GLOBAL module.name, whether or not that module exists here."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def __call__(self, *args: object) -> None:
        raise AssertionError("a fake global is only ever written, never called")


REBUILD = FakeGlobal("torch._utils", "_rebuild_tensor_v2")


class FakeStorage:
    def __init__(self, key: str, array: np.ndarray, type_name: str) -> None:
        self.key, self.array, self.type_name = key, array, type_name


class FakeTensor:
    """A tensor as torch pickles one: _rebuild_tensor_v2(storage, offset, size, stride, ...)."""

    def __init__(self, storage: FakeStorage, offset: int, size: tuple, stride: tuple) -> None:
        self.args = (storage, offset, size, stride, False, collections.OrderedDict())

    def __reduce__(self):
        return (REBUILD, self.args)


class CheckpointPickler(pickle._Pickler):  # type: ignore[name-defined]
    """The pure-Python pickler, taught to write FakeGlobal and storage references."""

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def __init__(self, file, *, legacy: bool) -> None:
        super().__init__(file, protocol=2)
        self.legacy = legacy

    def save_fake_global(self, obj: FakeGlobal) -> None:
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        self.memoize(obj)

    dispatch[FakeGlobal] = save_fake_global

    def persistent_id(self, obj):
        if not isinstance(obj, FakeStorage):
            return None
        storage_type = FakeGlobal("torch", obj.type_name)
        pid = ("storage", storage_type, obj.key, "cpu", obj.array.size)
        return (*pid, None) if self.legacy else pid


def state_pickle(state: object, *, legacy: bool) -> bytes:
    buffer = io.BytesIO()
    CheckpointPickler(buffer, legacy=legacy).dump(state)
    return buffer.getvalue()


def legacy_bytes(state: object, storages: list[FakeStorage], *, body: bytes | None = None) -> bytes:
    parts = [
        pickle.dumps(LEGACY_MAGIC_NUMBER, protocol=2),
        pickle.dumps(LEGACY_PROTOCOL_VERSION, protocol=2),
        pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2),
        body if body is not None else state_pickle(state, legacy=True),
        pickle.dumps([storage.key for storage in storages], protocol=2),
    ]
    for storage in storages:
        parts.append(
            struct.pack("<q", storage.array.size)
            + storage.array.astype("<" + storage.array.dtype.str[1:]).tobytes()
        )
    return b"".join(parts)


def zip_bytes(state: object, storages: list[FakeStorage], *, body: bytes | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(
            "archive/data.pkl", body if body is not None else state_pickle(state, legacy=False)
        )
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/version", "3\n")
        for storage in storages:
            archive.writestr(f"archive/data/{storage.key}", storage.array.tobytes())
    return buffer.getvalue()


def known_state() -> tuple[collections.OrderedDict, list[FakeStorage], dict[str, np.ndarray]]:
    """Tensors with offsets, shared storage, a transposed view and an int64 counter."""
    floats = np.arange(12, dtype=np.float32) * np.float32(0.5) - np.float32(1.25)
    shared = FakeStorage("0", floats, "FloatStorage")
    counter = FakeStorage("1", np.array([7], dtype=np.int64), "LongStorage")
    state = collections.OrderedDict(
        [
            ("conv.weight", FakeTensor(shared, 0, (2, 3), (3, 1))),
            ("conv.bias", FakeTensor(shared, 6, (4,), (1,))),
            ("fc.weight", FakeTensor(shared, 1, (3, 2), (1, 3))),  # a transposed view
            ("bn.num_batches_tracked", FakeTensor(counter, 0, (), ())),
        ]
    )
    expected = {
        "conv.weight": floats[:6].reshape(2, 3),
        "conv.bias": floats[6:10],
        "fc.weight": floats[1:7].reshape(2, 3).T,
        "bn.num_batches_tracked": np.array(7, dtype=np.int64),
    }
    return state, [shared, counter], expected


@pytest.mark.parametrize("layout", ["legacy", "zip"])
def test_reads_known_values_exactly(tmp_path: Path, layout: str) -> None:
    state, storages, expected = known_state()
    path = tmp_path / "weights.pth"
    path.write_bytes((legacy_bytes if layout == "legacy" else zip_bytes)(state, storages))

    arrays = state_dict_read(path=path)

    assert list(arrays) == list(expected)
    for name, value in expected.items():
        assert arrays[name].dtype == value.dtype
        assert arrays[name].shape == value.shape
        np.testing.assert_array_equal(arrays[name], value)
    # Copies of their own in native order, not read-only views into the file's bytes.
    assert all(array.flags.owndata and array.flags.writeable for array in arrays.values())


class RunsACommand:
    """What a hostile checkpoint hides: unpickling it would run ``touch marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("layout", ["legacy", "zip"])
def test_refuses_a_checkpoint_that_would_run_a_command(tmp_path: Path, layout: str) -> None:
    marker = tmp_path / "ran"
    hostile = collections.OrderedDict([("weight", RunsACommand(marker))])
    body = pickle.dumps(hostile, protocol=2)
    assert b"system" in body  # the pickle really names os.system
    path = tmp_path / "hostile.pth"
    path.write_bytes((legacy_bytes if layout == "legacy" else zip_bytes)(None, [], body=body))

    with pytest.raises(ModelRegistrationError, match="system"):
        state_dict_read(path=path)
    assert not marker.exists()


def test_refuses_a_command_where_no_global_belongs(tmp_path: Path) -> None:
    # The magic number's pickle may name no global at all, not even an allowed one.
    marker = tmp_path / "ran"
    path = tmp_path / "hostile.pth"
    path.write_bytes(pickle.dumps(RunsACommand(marker), protocol=2) + b"rest")

    with pytest.raises(ModelRegistrationError, match="refused"):
        state_dict_read(path=path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "module, name",
    [
        ("builtins", "eval"),
        ("torch._utils", "_rebuild_parameter"),
        ("torch", "load"),
        ("numpy.core.multiarray", "_reconstruct"),
    ],
)
def test_refuses_any_other_global(tmp_path: Path, module: str, name: str) -> None:
    class Other:
        def __reduce__(self):
            return (FakeGlobal(module, name), ("x",))

    state = collections.OrderedDict([("weight", Other())])
    path = tmp_path / "other.pth"
    path.write_bytes(legacy_bytes(None, [], body=state_pickle(state, legacy=True)))

    with pytest.raises(ModelRegistrationError, match=f"{module}.{name}"):
        state_dict_read(path=path)


def test_refuses_calling_a_storage_type(tmp_path: Path) -> None:
    class CallsStorage:
        def __reduce__(self):
            return (FakeGlobal("torch", "FloatStorage"), (3,))

    state = collections.OrderedDict([("weight", CallsStorage())])
    path = tmp_path / "calls.pth"
    path.write_bytes(legacy_bytes(None, [], body=state_pickle(state, legacy=True)))

    with pytest.raises(ModelRegistrationError, match="FloatStorage"):
        state_dict_read(path=path)


def test_refuses_a_tensor_reaching_past_its_storage(tmp_path: Path) -> None:
    storage = FakeStorage("0", np.zeros(4, dtype=np.float32), "FloatStorage")
    state = collections.OrderedDict([("weight", FakeTensor(storage, 2, (2, 2), (2, 1)))])
    path = tmp_path / "short.pth"
    path.write_bytes(legacy_bytes(state, [storage]))

    with pytest.raises(ModelRegistrationError, match="past the end"):
        state_dict_read(path=path)


def test_refuses_a_truncated_checkpoint(tmp_path: Path) -> None:
    state, storages, _ = known_state()
    path = tmp_path / "truncated.pth"
    path.write_bytes(legacy_bytes(state, storages)[:-5])

    with pytest.raises(ModelRegistrationError, match="truncated"):
        state_dict_read(path=path)


def test_refuses_what_is_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "notes.pth"
    path.write_bytes(b"hello")

    with pytest.raises(ModelRegistrationError):
        state_dict_read(path=path)
