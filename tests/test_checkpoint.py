"""The inert checkpoint reader holds against crafted files and resource bombs: refused with a 400, nothing run.

Each crafted file here is live: a control loads it the way a permissive reader would and shows the marker file
appear (or the memory go up), so a refusal is the reader's doing and not a dud payload.
"""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import pytest

from harness.client import upload
from server.models.checkpoint import MAX_PICKLE_OPS, read_checkpoint
from server.models.identify import inspect_model
from server.models.info import ModelRejected

ROOT = Path(__file__).resolve().parent.parent


# --- pickle opcodes, written by hand so each payload is exactly the one its test names -----------------------------
def global_(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def text(value: str) -> bytes:
    data = value.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def call(function: bytes, *args: bytes) -> bytes:
    return function + b"(" + b"".join(args) + b"tR"


def getattr_(target: bytes, name: str) -> bytes:
    return call(global_("builtins", "getattr"), target, text(name))


def as_checkpoint(value: bytes) -> bytes:
    """A protocol-2 pickle of {"model": value}."""
    return b"\x80\x02}" + text("model") + value + b"s."


def getattr_chain(code: str) -> bytes:
    """exec(code) reached only through allow-listed names: getattr, torch's Module and _rebuild_from_type_v2."""
    module = global_("torch.nn.modules.module", "Module")
    builtins_dict = call(getattr_(getattr_(getattr_(module, "__init__"), "__globals__"), "get"), text("__builtins__"))
    exec_function = call(getattr_(builtins_dict, "get"), text("exec"))
    rebuild = global_("torch._tensor", "_rebuild_from_type_v2")
    return as_checkpoint(call(rebuild, exec_function, module, b"(" + text(code) + b"t", b"N"))


def write_archive(path: Path, members: list[tuple[str, bytes]], compression=zipfile.ZIP_STORED) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names: that is the point
        with zipfile.ZipFile(path, "w", compression) as archive:
            for name, data in members:
                archive.writestr(name, data)
    return path


def torch_members(checkpoint: Path) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(checkpoint) as archive:
        return [(name, archive.read(name)) for name in archive.namelist()]


def marker_code(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').write('ran')"


def run_python(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", code]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)


# --- two crafted pickles that run code when unpickled for real --------------------------------------------------------
@pytest.mark.slow  # imports torch
def test_the_getattr_chain_is_live_when_unpickled_for_real(tmp_path):
    pytest.importorskip("torch")
    marker = tmp_path / "ran"
    payload = tmp_path / "chain.pkl"
    payload.write_bytes(getattr_chain(marker_code(marker)))
    run_python(f"import pickle; pickle.loads(open({str(payload)!r}, 'rb').read())")
    assert marker.exists()  # the control: a real unpickler runs it


def test_the_getattr_chain_is_refused_with_a_400_and_runs_nothing(client, tmp_path):
    marker = tmp_path / "ran"
    checkpoint = write_archive(
        tmp_path / "chain.pt", [("archive/data.pkl", getattr_chain(marker_code(marker))), ("archive/version", b"3\n")]
    )
    with pytest.raises(ModelRejected, match="builtins.getattr in a way no YOLO checkpoint does"):
        read_checkpoint(checkpoint)
    response = upload(client, "/upload/model", checkpoint, name="weights.pt")
    assert response.status_code == 400 and "getattr" in response.get_json()["error"]
    assert not marker.exists()


def test_getattr_as_real_checkpoints_use_it_is_accepted(tmp_path, model_zoo):
    """A fused model pickles Conv.forward as getattr(<that Conv>, "forward_fuse"): still fine."""
    assert inspect_model(model_zoo / "yolov8n.pt").family == "yolov8"
    old_head = as_checkpoint(getattr_(global_("ultralytics.nn.modules.head", "Detect"), "forward"))
    top, _ = read_checkpoint(write_archive(tmp_path / "old.pt", [("archive/data.pkl", old_head)]))
    assert "model" in top


@pytest.mark.parametrize("malicious_first", [False, True])
def test_two_data_pkl_members_are_refused_with_a_400_and_run_nothing(client, model_zoo, tmp_path, malicious_first):
    marker = tmp_path / "ran"
    members = torch_members(model_zoo / "yolov8n.pt")
    prefix = next(name for name, _ in members if name.endswith("/data.pkl")).rsplit("/", 1)[0]
    evil = (f"{prefix}/data.pkl", as_checkpoint(call(global_("builtins", "exec"), text(marker_code(marker)))))
    checkpoint = write_archive(tmp_path / "two.pt", [evil, *members] if malicious_first else [*members, evil])
    with pytest.raises(ModelRejected, match="more than once"):
        read_checkpoint(checkpoint)
    response = upload(client, "/upload/model", checkpoint, name="weights.pt")
    assert response.status_code == 400 and "more than once" in response.get_json()["error"]
    assert not marker.exists()


@pytest.mark.parametrize("twin", ["archive/data/0", "ARCHIVE/data/0", "/archive/data/0", "archive\\data/0"])
def test_any_duplicate_member_is_refused(model_zoo, tmp_path, twin):
    members = torch_members(model_zoo / "yolov8n.pt")
    prefix = members[0][0].split("/")[0]
    twin = twin.replace("archive", prefix).replace("ARCHIVE", prefix.upper())
    with pytest.raises(ModelRejected, match="more than once"):
        read_checkpoint(write_archive(tmp_path / "dup.pt", [*members, (twin, b"\0" * 16)]))


# --- resource bombs --------------------------------------------------------------------------------------------------
def memo_bomb(index: int, size: int = 16 * 1024) -> bytes:
    """Empty lists stored in the memo at a huge index: a few bytes that make the unpickler allocate index * 16 bytes."""
    one = b"]r" + struct.pack("<I", index) + b"0"  # EMPTY_LIST, LONG_BINPUT index, POP
    return b"\x80\x02" + one * ((size - 4) // len(one)) + b"}."


def peak_rss_mb(code: str) -> tuple[float, str]:
    """Run code in a fresh interpreter; return its peak resident memory in MB and what it printed before."""
    # VmHWM, not getrusage's ru_maxrss: that one survives exec and so starts at the forking pytest's size.
    wrapped = (
        "import json, re\n"
        f"{code}\n"
        "status = open('/proc/self/status').read()\n"
        "print(json.dumps(int(re.search(r'VmHWM:\\s+(\\d+) kB', status).group(1)) / 1024))\n"
    )
    result = run_python(wrapped, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    return json.loads(lines[-1]), "\n".join(lines[:-1])


def test_a_16_kb_memo_bomb_is_refused_without_taking_memory(tmp_path):
    bomb = write_archive(tmp_path / "bomb.pt", [("archive/data.pkl", memo_bomb(1 << 28))])
    assert bomb.stat().st_size < 20 * 1024
    code = (
        "from server.models.identify import inspect_model\n"
        "from server.models.info import ModelRejected\n"
        f"try:\n    inspect_model({str(bomb)!r})\nexcept ModelRejected as e:\n    print(e)\n"
    )
    peak, printed = peak_rss_mb(code)
    assert "implausibly large" in printed
    assert peak < 400, f"peak {peak:.0f} MB"
    print(f"\n16 KB memo bomb refused at a peak of {peak:.0f} MB")


def test_the_memo_bomb_is_live_without_the_budget(tmp_path):
    """The control: the same kind of file, a smaller index, through the unpickler without the budget check."""
    data = memo_bomb(1 << 24)
    path = tmp_path / "data.pkl"
    path.write_bytes(data)
    baseline, _ = peak_rss_mb("import server.models.checkpoint")
    code = (
        "from server.models.checkpoint import InertUnpickler\n"
        f"InertUnpickler(open({str(path)!r}, 'rb').read(), 'archive', set()).load()\n"
    )
    peak, _ = peak_rss_mb(code)
    assert peak - baseline > 150, (baseline, peak)  # 2^24 memo slots: about 200 MB from 16 KB


def test_a_pickle_with_too_many_opcodes_is_refused(tmp_path):
    data = b"\x80\x02" + b"N0" * (MAX_PICKLE_OPS // 2 + 1) + b"}."  # NONE, POP: nothing kept, yet every op costs
    with pytest.raises(ModelRejected, match="implausibly large"):
        read_checkpoint(write_archive(tmp_path / "ops.pt", [("archive/data.pkl", data)], zipfile.ZIP_DEFLATED))


def test_a_pickle_member_is_cut_off_while_reading_not_trusted_by_its_header(tmp_path, monkeypatch):
    from server.models import checkpoint

    monkeypatch.setattr(checkpoint, "MAX_PICKLE_BYTES", 1024 * 1024)
    data = b"\x80\x02}" + b"N0" * (1024 * 1024) + b"."  # 2 MB of valid pickle, 2 KB deflated
    path = write_archive(tmp_path / "big.pt", [("archive/data.pkl", data)], zipfile.ZIP_DEFLATED)
    with pytest.raises(ModelRejected, match="larger than it can be"):
        read_checkpoint(path)


def test_a_tensor_record_that_inflates_past_its_declared_size_is_refused(model_zoo, tmp_path):
    """A deflate bomb in place of a storage record: reading stops one byte past the size the pickle declares."""
    from server.models.convert import convert_to_onnx

    members = torch_members(model_zoo / "yolov8n.pt")
    name = next(n for n, _ in members if re.search(r"/data/\d+$", n))
    bombed = [(n, b"\0" * (64 * 1024 * 1024) if n == name else d) for n, d in members]
    path = write_archive(tmp_path / "inflating.pt", bombed, zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 10 * 1024 * 1024
    with pytest.raises(ModelRejected, match="larger than it can be"):
        convert_to_onnx(path, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


# --- no torch on the server's path ---------------------------------------------------------------------------------
def test_no_server_module_imports_torch_or_unpickles_for_real():
    offenders = []
    for source in (ROOT / "server").rglob("*.py"):
        text_ = source.read_text()
        if re.search(r"^\s*(import|from)\s+(torch|ultralytics|torchvision)\b", text_, re.MULTILINE):
            offenders.append(f"{source}: imports torch/ultralytics")
        if re.search(r"torch\.load|pickle\.loads?\(|\bexport_worker\b", text_):
            offenders.append(f"{source}: torch.load / pickle.load / export_worker")
    assert offenders == []


def test_rebuild_from_type_is_held_to_rebuilding_a_tensor(tmp_path):
    """_rebuild_from_type_v2(func, type, args, state) calls func(*args) in torch: func must be a tensor rebuild."""
    forward = getattr_(global_("ultralytics.nn.modules.head", "Detect"), "forward")  # an allowed getattr on its own
    module = global_("torch.nn.modules.module", "Module")
    rebuild = call(global_("torch._tensor", "_rebuild_from_type_v2"), forward, module, b"(" + text("x") + b"t", b"N")
    with pytest.raises(ModelRejected, match="_rebuild_from_type_v2 in a way no YOLO checkpoint does"):
        read_checkpoint(write_archive(tmp_path / "rebuild.pt", [("archive/data.pkl", as_checkpoint(rebuild))]))


def tensor_checkpoint(path: Path, storage_bytes: int, numel: int, size: tuple, stride: tuple) -> Path:
    """A checkpoint {"model": float tensor} whose storage record holds storage_bytes and whose pickle declares numel."""
    def integers(*values: int) -> bytes:
        return b"(" + b"".join(b"J" + struct.pack("<i", v) for v in values) + b"t"  # a tuple of BININTs

    storage_id = text("storage") + global_("torch", "FloatStorage") + text("0") + text("cpu")
    pid = b"(" + storage_id + integers(numel)[1:-1] + b"tQ"  # ('storage', FloatStorage, key, location, numel)
    no_hooks = global_("collections", "OrderedDict") + b")R"
    rebuild = global_("torch._utils", "_rebuild_tensor_v2")
    tensor = call(rebuild, pid, integers(0)[1:-1], integers(*size), integers(*stride), b"\x89", no_hooks)
    members = [("archive/data.pkl", as_checkpoint(tensor)), ("archive/data/0", b"\0" * storage_bytes)]
    return write_archive(path, members)


def read_tensor(path: Path):
    from server.models.checkpoint import open_checkpoint
    from server.models.torch_zip import TensorReader

    with open_checkpoint(path) as checkpoint:
        return TensorReader(checkpoint.archive, checkpoint.prefix).array(checkpoint.top["model"])


def test_tensors_are_read_with_their_size_and_stride(tmp_path):
    array = read_tensor(tensor_checkpoint(tmp_path / "ok.pt", 24, 6, (2, 3), (3, 1)))
    assert array.shape == (2, 3) and array.dtype.name == "float32"
    transposed = read_tensor(tensor_checkpoint(tmp_path / "t.pt", 24, 6, (3, 2), (1, 3)))
    assert transposed.shape == (3, 2)


@pytest.mark.parametrize(
    "storage_bytes, numel, size, stride, found",
    [
        (24, 6, (2, 4), (4, 1), "reaches past its storage"),  # 8 elements from a storage of 6
        (24, 6, (7,), (1,), "reaches past its storage"),
        (20, 6, (2, 3), (3, 1), "holds 20 bytes, not 24"),  # a record shorter than the pickle declares
        (28, 6, (2, 3), (3, 1), "larger than it can be"),  # and a longer one
    ],
)
def test_tensors_outside_their_storage_are_refused(tmp_path, storage_bytes, numel, size, stride, found):
    with pytest.raises(ModelRejected, match=found):
        read_tensor(tensor_checkpoint(tmp_path / "bad.pt", storage_bytes, numel, size, stride))


# --- Torch-Pruning's __main__.C2f_v2: admitted by its layout, never by its name -----------------------------------
def bare(module: str, name: str) -> bytes:
    """cls.__new__(cls), as torch pickles every nn.Module (NEWOBJ with no arguments)."""
    return global_(module, name) + b")\x81"


def with_modules(obj: bytes, modules: dict[str, bytes]) -> bytes:
    """obj with the state {"_modules": OrderedDict(modules)} (BUILD), as an nn.Module is pickled."""
    items = b"".join(text(key) + value for key, value in modules.items())
    ordered = bare("collections", "OrderedDict") + b"(" + items + b"u"
    return obj + b"}" + text("_modules") + ordered + b"sb"


def conv() -> bytes:
    return bare("ultralytics.nn.modules.conv", "Conv")


def c2f_v2(modules: dict[str, bytes] | None = None) -> bytes:
    """A C2f_v2 object as Torch-Pruning's example pickles it (or with other modules)."""
    blocks = with_modules(bare("torch.nn.modules.container", "ModuleList"),
                          {"0": bare("ultralytics.nn.modules.block", "Bottleneck")})  # fmt: skip
    layout = {"cv0": conv(), "cv1": conv(), "cv2": conv(), "m": blocks} if modules is None else modules
    return with_modules(bare("__main__", "C2f_v2"), layout)


def pickled(tmp_path: Path, value: bytes) -> Path:
    return write_archive(tmp_path / "weights.pt", [("archive/data.pkl", as_checkpoint(value)), ("archive/version", b"3\n")])


C2F_V2_RUNS = """
import pickle, sys
class C2f_v2:
    def __init__(self, *args):
        open({marker!r}, 'w').write('ran')
sys.modules['__main__'].C2f_v2 = C2f_v2
pickle.loads(open({payload!r}, 'rb').read())
"""


def test_a_c2f_v2_of_torch_prunings_layout_is_read_as_an_inert_layer(tmp_path):
    top, seen = read_checkpoint(pickled(tmp_path, c2f_v2()))
    assert "__main__.C2f_v2" in seen and "model" in top


@pytest.mark.parametrize("modules", [
    {"cv0": conv(), "cv1": conv(), "cv2": conv()},  # no m
    {"cv0": conv(), "cv1": conv(), "cv2": conv(), "m": conv(), "extra": conv()},
    {"cv0": conv(), "cv1": bare("torch.nn.modules.linear", "Linear"), "cv2": conv(), "m": conv()},
    {},
])
def test_a_c2f_v2_of_another_layout_is_refused_saying_to_upload_the_onnx_export(tmp_path, modules):
    with pytest.raises(ModelRejected, match=r"not Torch-Pruning's layout.*upload its ONNX export"):
        read_checkpoint(pickled(tmp_path, c2f_v2(modules)))


def test_a_c2f_v2_that_holds_other_blocks_is_refused(tmp_path):
    blocks = with_modules(bare("torch.nn.modules.container", "ModuleList"), {"0": conv()})
    with pytest.raises(ModelRejected, match="not Torch-Pruning's layout"):
        read_checkpoint(pickled(tmp_path, c2f_v2({"cv0": conv(), "cv1": conv(), "cv2": conv(), "m": blocks})))


def test_a_c2f_v2_called_with_arguments_is_live_for_real_and_refused_with_a_400(client, tmp_path):
    """The name is admitted, a call is not: pickle would call the script's own class with the file's arguments."""
    marker = tmp_path / "ran"
    hostile = as_checkpoint(call(global_("__main__", "C2f_v2"), text("payload")))
    checkpoint = write_archive(tmp_path / "weights.pt", [("archive/data.pkl", hostile)])
    payload = tmp_path / "payload.pkl"
    payload.write_bytes(hostile)
    run_python(C2F_V2_RUNS.format(marker=str(marker), payload=str(payload)))
    assert marker.exists()  # the control: a script that defines C2f_v2 runs it when unpickling for real
    marker.unlink()
    with pytest.raises(ModelRejected, match="calls __main__.C2f_v2 in a way no YOLO checkpoint does"):
        read_checkpoint(checkpoint)
    response = upload(client, "/upload/model", checkpoint, name="weights.pt")
    assert response.status_code == 400 and "__main__.C2f_v2" in response.get_json()["error"]
    assert not marker.exists()


def test_a_c2f_v2_built_by_the_protocol_0_reconstructor_is_refused(tmp_path):
    """Built that way, it would escape the layout check (only objects C2f_v2 itself built are counted)."""
    reconstruct = call(global_("copyreg", "_reconstructor"), global_("__main__", "C2f_v2"), conv(), b"N")
    with pytest.raises(ModelRejected, match="copyreg._reconstructor"):
        read_checkpoint(pickled(tmp_path, reconstruct))


@pytest.mark.parametrize("name", ["C2f_v3", "os", "system", "Payload"])
def test_any_other_class_of_a_script_is_refused_saying_to_upload_the_onnx_export(client, tmp_path, name):
    checkpoint = pickled(tmp_path, bare("__main__", name))
    with pytest.raises(ModelRejected, match=rf"references __main__\.{name}, .*upload its ONNX export"):
        read_checkpoint(checkpoint)
    response = upload(client, "/upload/model", checkpoint, name="weights.pt")
    assert response.status_code == 400 and "ONNX export" in response.get_json()["error"]
