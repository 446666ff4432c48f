"""The restricted unpickler: data pickles (Python 2 and 3, numpy arrays) load; code is refused."""
from __future__ import annotations

import copyreg
import os
import pickle
import subprocess
import warnings
from collections import OrderedDict

import numpy as np
import pytest

import _py2pickle as py2
from sepnms.errors import InputError, UnsafePickleError
from sepnms.io import safe_pickle


def _write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------------------------------
# what must load


@pytest.mark.parametrize("protocol", [0, 2])
def test_python2_str_opcodes_decode_as_latin1(tmp_path, protocol):
    """Python 2 ``str`` (STRING / SHORT_BINSTRING / BINSTRING) holding latin1 bytes -> Python 3 str."""
    obj = {"w": "caf\xe9", "long": "\xfc" * 300, "quote": "it's a \\ path\n", "n": 5}
    data = py2.dumps(obj, protocol)
    # the stream really uses the Python 2 byte-string opcodes, with the raw latin1 byte 0xe9
    if protocol == 0:
        assert b"S'caf\\xe9'\n" in data
    else:
        assert b"U\x04caf\xe9" in data  # SHORT_BINSTRING
        assert b"T\x2c\x01\x00\x00" + b"\xfc" * 300 in data  # BINSTRING, 300 bytes
    loaded = safe_pickle.load(_write(tmp_path, "refs(unc).p", data))
    assert loaded == {"w": "café", "long": "ü" * 300, "quote": "it's a \\ path\n", "n": 5}
    assert isinstance(loaded["w"], str)


@pytest.mark.parametrize("protocol", [0, 2])
def test_python2_unicode_and_builtin_globals(tmp_path, protocol):
    obj = {
        py2.Unicode("k\xe9y"): py2.Unicode("na\xefve \u2603 snowman\n"),
        "set": py2.Global("__builtin__", "set", ([1, 2, 2],)),
        "uni": py2.Global("__builtin__", "unicode", ("caf\xe9",)),
        "long": py2.Global("__builtin__", "long", ("12345678901234567890",)),
        "lng": py2.Long(2**70),
        "tup": (1, 2.5, None, True),
    }
    loaded = safe_pickle.load(_write(tmp_path, "x.p", py2.dumps(obj, protocol)))
    assert loaded == {
        "kéy": "naïve ☃ snowman\n",
        "set": {1, 2},
        "uni": "café",
        "long": 12345678901234567890,
        "lng": 1180591620717411303424,
        "tup": (1, 2.5, None, True),
    }


@pytest.mark.parametrize("protocol", [0, 2])
def test_python2_numpy_array_layout(tmp_path, protocol):
    """numpy under Python 2 wrote ``numpy.core.multiarray._reconstruct`` and a ``str`` buffer."""
    arr = np.arange(12, dtype=np.float32).reshape(3, 4) / 4
    data = py2.dumps({7: arr}, protocol)
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in data
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy.core DeprecationWarning either
        loaded = safe_pickle.load(_write(tmp_path, "rpn.pkl", data))
    assert list(loaded) == [7]
    assert loaded[7].dtype == np.float32 and loaded[7].shape == (3, 4)
    assert loaded[7][2, 3] == pytest.approx(2.75)
    assert loaded[7][0, 1] == pytest.approx(0.25)


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4])
def test_python3_data_pickles_load(tmp_path, protocol):
    obj = {
        1: np.full((2, 81, 4), 3.5, np.float32),
        2: np.arange(6, dtype=np.int64),
        "scalar": np.float32(1.25),
        "bytes": b"\x00\xff",
        "od": OrderedDict([("b", 1), ("a", 2)]),
        "fs": frozenset({1}),
        "set": {3},
    }
    loaded = safe_pickle.load(_write(tmp_path, "x.pkl", pickle.dumps(obj, protocol=protocol)))
    assert loaded[1].shape == (2, 81, 4) and float(loaded[1][1, 80, 3]) == 3.5
    assert loaded[2].tolist() == [0, 1, 2, 3, 4, 5]
    assert float(loaded["scalar"]) == 1.25
    assert loaded["bytes"] == b"\x00\xff"
    assert list(loaded["od"].items()) == [("b", 1), ("a", 2)]
    assert loaded["fs"] == frozenset({1}) and loaded["set"] == {3}


@pytest.mark.parametrize("protocol", [3, 4])
def test_python3_bytes_like_and_complex_load(tmp_path, protocol):
    obj = {"empty": b"", "ba": bytearray(b"ab"), "cx": 1 + 2j, "rows0": np.zeros((0, 81), np.float32)}
    loaded = safe_pickle.load(_write(tmp_path, "x.pkl", pickle.dumps(obj, protocol=protocol)))
    assert loaded["empty"] == b"" and loaded["ba"] == bytearray(b"ab") and loaded["cx"] == 1 + 2j
    assert loaded["rows0"].shape == (0, 81)


@pytest.mark.parametrize(
    "obj",
    [b"", bytearray(b"ab"), 1 + 2j, np.zeros((0, 81, 4), np.float32)],
    ids=["empty-bytes", "bytearray", "complex", "zero-row-array"],
)
def test_python3_protocol2_bytes_like_and_complex_load(tmp_path, obj):
    path = tmp_path / "x.pkl"
    safe_pickle.dump(path, {"v": obj})  # protocol 2
    loaded = safe_pickle.load(path)["v"]
    if isinstance(obj, np.ndarray):
        assert loaded.shape == (0, 81, 4) and loaded.dtype == np.float32
    else:
        assert loaded == obj and type(loaded) is type(obj)


def test_numpy1_global_names_load(tmp_path):
    """Pickles written under numpy 1.x name ``numpy.core.multiarray`` (numpy 2: ``numpy._core``)."""
    data = pickle.dumps({3: np.array([[1.0, 2.0]], np.float32)}, protocol=2)
    if b"numpy._core.multiarray" in data:
        data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray" in data
    loaded = safe_pickle.load(_write(tmp_path, "x.pkl", data))
    assert loaded[3].tolist() == [[1.0, 2.0]]


def test_protocol5_numpy_pickle_loads(tmp_path):
    data = pickle.dumps({1: np.ones((2, 81), np.float32)}, protocol=5)
    loaded = safe_pickle.load(_write(tmp_path, "scores.pkl", data))
    assert loaded[1].shape == (2, 81) and float(loaded[1].sum()) == 162.0


def test_dump_then_load_roundtrip(tmp_path):
    path = tmp_path / "out" / "x.pkl"
    safe_pickle.dump(path, {"a": [1, "é"], 2: np.zeros(3, np.float32)})
    assert path.read_bytes()[:2] == b"\x80\x02"  # protocol 2: readable by Python 2 tools
    loaded = safe_pickle.load(path)
    assert loaded["a"] == [1, "é"] and loaded[2].tolist() == [0.0, 0.0, 0.0]


# ---------------------------------------------------------------------------------------
# what must be refused


class _ShellReduce:
    """Unpickling this would run a shell command that creates a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _SubprocessReduce:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (subprocess.check_call, (["touch", self.marker],))


class _Harmless:
    def __init__(self):
        self.x = 1


def _assert_refused(path, marker=None, names: tuple[str, ...] = ()):
    with pytest.raises(UnsafePickleError) as info:
        safe_pickle.load(path)
    msg = str(info.value)
    assert str(path) in msg, msg
    assert "refused" in msg
    for name in names:
        assert name in msg, msg
    assert info.value.path == path
    if marker is not None:
        assert not marker.exists(), "the payload ran"


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_reduce_running_shell_command_is_refused(tmp_path, protocol):
    """Protocol 4/5 name the callable with STACK_GLOBAL; 0/2 with GLOBAL."""
    marker = tmp_path / "PWNED"
    data = pickle.dumps(_ShellReduce(marker), protocol=protocol)
    path = _write(tmp_path, "evil.p", data)
    _assert_refused(path, marker, names=("system",))


def test_shell_payload_really_runs_under_plain_pickle(tmp_path):
    """Guards the test above: the marker file is created by an unrestricted load."""
    marker = tmp_path / "RAN"
    data = pickle.dumps(_ShellReduce(marker), protocol=2)
    pickle.loads(data)
    assert marker.exists()


@pytest.mark.parametrize(
    "payload,name",
    [
        (b"cos\nsystem\n(S'touch {m}'\ntR.", "os.system"),
        (b"cposix\nsystem\n(S'touch {m}'\ntR.", "posix.system"),
        (b"(S'touch {m}'\nios\nsystem\n.", "os.system"),  # INST opcode
        (b"csubprocess\ncheck_call\n((S'touch'\nS'{m}'\nltR.", "subprocess.check_call"),
        (b"csubprocess\nPopen\n((S'touch'\nS'{m}'\nltR.", "subprocess.Popen"),
        (b"cbuiltins\neval\n(S'__import__(\"os\").system(\"touch {m}\")'\ntR.", "builtins.eval"),
        (b"c__builtin__\neval\n(S'__import__(\"os\").system(\"touch {m}\")'\ntR.", "__builtin__.eval"),
        (b"cbuiltins\nexec\n(S'import os; os.system(\"touch {m}\")'\ntR.", "builtins.exec"),
        (b"cbuiltins\ngetattr\n(cbuiltins\ndict\nS'get'\ntR.", "builtins.getattr"),
        (b"cbuiltins\n__import__\n(S'os'\ntR.", "builtins.__import__"),
        (b"cbuiltins\nopen\n(S'{m}'\nS'w'\ntR.", "builtins.open"),
        (b"ccollections\nCounter\n(tR.", "collections.Counter"),  # harmless but not data
        (b"cdatetime\ndatetime\n(I2020\nI1\nI1\ntR.", "datetime.datetime"),
        (b"cpathlib\nPosixPath\n(S'{m}'\ntR.", "pathlib.PosixPath"),
        (b"cnumpy.testing._private.utils\nrunstring\n(S'open(\"{m}\", \"w\")'\n(dtR.", "runstring"),
        (b"cnumpy\nload\n(S'{m}'\ntR.", "numpy.load"),
        (b"ccopy_reg\n_reconstructor\n(cos\n_wrap_close\ncbuiltins\nobject\nNtR.", "copy_reg._reconstructor"),
        (b"ccopyreg\n_reconstructor\n(cbuiltins\ndict\ncbuiltins\ndict\nNtR.", "copyreg._reconstructor"),
        (b"ccopyreg\n__newobj__\n(cbuiltins\ndict\ntR.", "copyreg.__newobj__"),
    ],
)
def test_unsafe_globals_are_refused(tmp_path, payload, name):
    marker = tmp_path / "PWNED"
    data = payload.replace(b"{m}", str(marker).encode())
    path = _write(tmp_path, "refs(unc).p", data)
    _assert_refused(path, marker, names=(name,))


def test_subprocess_reduce_is_refused(tmp_path):
    marker = tmp_path / "PWNED"
    path = _write(tmp_path, "evil.pkl", pickle.dumps(_SubprocessReduce(marker), protocol=2))
    _assert_refused(path, marker, names=("subprocess",))


def test_arbitrary_class_instance_is_refused(tmp_path):
    path = _write(tmp_path, "obj.pkl", pickle.dumps({"x": _Harmless()}, protocol=2))
    _assert_refused(path, names=("_Harmless",))


def test_copyreg_extension_registry_is_refused(tmp_path):
    """EXT opcodes resolve through copyreg's registry; they must go through the same check."""
    marker = tmp_path / "PWNED"
    code = 0xF3
    copyreg.add_extension("posix", "system", code)
    try:
        cmd = b"touch " + str(marker).encode()
        data = b"\x80\x02\x82" + bytes([code]) + b"X" + len(cmd).to_bytes(4, "little") + cmd + b"\x85R."
        path = _write(tmp_path, "ext.p", data)
        _assert_refused(path, marker, names=("posix.system",))
    finally:
        copyreg.remove_extension("posix", "system", code)


@pytest.mark.parametrize("codec", ["rot13", "hex", "zlib", "base64", "utf-16"])
def test_codecs_encode_non_latin1_is_refused(tmp_path, codec):
    """The refusal holds (an InputError naming the file), whatever its class."""
    data = b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX" + len(codec).to_bytes(4, "little") + codec.encode() + b"\x86R."
    path = _write(tmp_path, "c.pkl", data)
    with pytest.raises(InputError) as info:
        safe_pickle.load(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("codec", ["rot13", "zlib"])
def test_codecs_encode_non_latin1_raises_unsafe_pickle_error(tmp_path, codec):
    data = b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX" + len(codec).to_bytes(4, "little") + codec.encode() + b"\x86R."
    path = _write(tmp_path, "c.pkl", data)
    _assert_refused(path, names=("_codecs",))


def test_codecs_encode_latin1_is_admitted(tmp_path):
    data = b"\x80\x02c_codecs\nencode\nX\x05\x00\x00\x00caf\xc3\xa9X\x06\x00\x00\x00latin1\x86R."
    assert safe_pickle.load(_write(tmp_path, "c.pkl", data)) == b"caf\xe9"


def test_corrupt_and_missing_pickles_are_input_errors(tmp_path):
    good = pickle.dumps({"a": list(range(100))}, protocol=2)
    cut = _write(tmp_path, "cut.p", good[: len(good) // 2])
    with pytest.raises(InputError, match="not a readable pickle") as info:
        safe_pickle.load(cut)
    assert not isinstance(info.value, UnsafePickleError)
    assert str(cut) in str(info.value)
    missing = tmp_path / "nope.p"
    with pytest.raises(InputError, match="file not found") as info:
        safe_pickle.load(missing)
    assert str(missing) in str(info.value)
