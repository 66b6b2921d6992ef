"""Hand-made hostile and broken model files, one builder per case.

Each builder writes its file into a folder and returns the path; :data:`CASES` maps
a case name to its builder and a pattern the one-line refusal must match. Files
that would run code name :data:`MARKER`, a file that exists only if they ran.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import zipfile
from pathlib import Path

import h5py
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..readers import writers_keras, writers_tflite
from ..readers.network import equivalence_network, write_onnx
from ..readers.writers_safetensors import write_raw, write_safetensors

#: A file the hostile pickles would create by running ``touch``.
MARKER = Path(os.environ.get("TMPDIR", "/tmp")) / "filterdb-hostile-pickle-ran"
TERA = [1 << 20, 1 << 20, 3, 3]  # 2**40 elements: 4 TiB of float32


def good_onnx(folder: Path, name: str = "good.onnx", seed: int = 0) -> Path:
    """A valid ONNX model; different seeds give different weights (and hashes)."""
    return write_onnx(folder / name, equivalence_network(seed))


def _onnx_model(weight: TensorProto, nodes=None, extra_inits=()) -> onnx.ModelProto:
    nodes = nodes or [helper.make_node("Conv", ["x", weight.name], ["y"], name="conv")]
    graph = helper.make_graph(
        nodes, "hostile", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)],
        [weight, *extra_inits])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def onnx_terabyte_dims(folder: Path) -> Path:
    weight = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=TERA,
                         raw_data=b"\0" * 36)
    path = folder / "terabyte.onnx"
    onnx.save(_onnx_model(weight), path)
    return path


def _external(folder: Path, name: str, location: str) -> Path:
    weight = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1, 1, 3, 3],
                         data_location=TensorProto.EXTERNAL)
    weight.external_data.add(key="location", value=location)
    path = folder / name
    onnx.save(_onnx_model(weight), path)
    return path


def onnx_external_dotdot(folder: Path) -> Path:
    return _external(folder, "dotdot.onnx", "../../../../etc/passwd")


def onnx_external_absolute(folder: Path) -> Path:
    return _external(folder, "absolute.onnx", "/etc/passwd")


def onnx_external_symlink(folder: Path) -> Path:
    link = folder / "weights.bin"
    link.unlink(missing_ok=True)
    link.symlink_to("/etc/passwd")
    return _external(folder, "symlink.onnx", "weights.bin")


def onnx_cyclic_graph(folder: Path) -> Path:
    weight = numpy_helper.from_array(np.ones((2, 2, 3, 3), np.float32), "w")
    nodes = [helper.make_node("Conv", ["x_or_b", "w"], ["a"], name="conv"),
             helper.make_node("Relu", ["a"], ["b"], name="relu"),
             helper.make_node("Add", ["x", "b"], ["x_or_b"], name="add")]
    path = folder / "cyclic.onnx"
    onnx.save(_onnx_model(weight, nodes), path)
    return path


def onnx_enormous_graph(folder: Path) -> Path:
    """A conv after 200,000 Identity nodes: a graph far deeper than any CNN."""
    weight = numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "w")
    nodes = [helper.make_node("Identity", [f"t{i}" if i else "x"], [f"t{i + 1}"])
             for i in range(200_000)]
    nodes.append(helper.make_node("Conv", ["t200000", "w"], ["y"], name="conv"))
    path = folder / "enormous.onnx"
    onnx.save(_onnx_model(weight, nodes), path)
    return path


def onnx_zero_sized(folder: Path) -> Path:
    weight = numpy_helper.from_array(np.zeros((0, 3, 3, 3), np.float32), "w")
    path = folder / "zero_sized.onnx"
    onnx.save(_onnx_model(weight), path)
    return path


def png_behind_onnx(folder: Path) -> Path:
    path = folder / "picture.onnx"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    return path


def empty_onnx(folder: Path) -> Path:
    path = folder / "empty.onnx"
    path.write_bytes(b"")
    return path


class _Touch:
    """Unpickling this object runs ``os.system("touch MARKER")``."""

    def __reduce__(self):
        return os.system, (f"touch {MARKER}",)


def pt_legacy_pickle_runs_code(folder: Path) -> Path:
    path = folder / "legacy_evil.pt"
    with open(path, "wb") as handle:  # torch's legacy layout: magic number, then pickles
        pickle.dump(0x1950A86A20F9469CFC6C, handle, protocol=2)
        pickle.dump(_Touch(), handle, protocol=2)
    return path


def _torch_zip(path: Path, members: dict[str, bytes], compress=zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compress) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def pt_zip_pickle_runs_code(folder: Path) -> Path:
    evil = pickle.dumps(_Touch(), protocol=2)  # protocol 2: what torch.save writes
    return _torch_zip(folder / "zip_evil.pt", {"archive/data.pkl": evil,
                                                "archive/version": b"3\n"})


def pt_builtins_eval(folder: Path) -> Path:
    # GLOBAL builtins.eval, then eval("__import__('os').system(...)"), as raw opcodes
    code = f"__import__('os').system('touch {MARKER}')".encode()
    data = (b"\x80\x02cbuiltins\neval\nq\x00X" + struct.pack("<I", len(code)) + code
            + b"q\x01\x85q\x02Rq\x03.")
    return _torch_zip(folder / "eval.pth", {"archive/data.pkl": data,
                                             "archive/version": b"3\n"})


def torchscript_evil_constants(folder: Path) -> Path:
    return _torch_zip(folder / "script_evil.pt", {
        "archive/constants.pkl": pickle.dumps(_Touch(), protocol=2),
        "archive/code/__torch__.py": b"class Model:\n  pass\n",
        "archive/data.pkl": pickle.dumps(_Touch(), protocol=2), "archive/version": b"3\n"})


def pt_zip_bomb(folder: Path) -> Path:
    """data.pkl deflated from 200 MB of zeros (a 200 kB file)."""
    return _torch_zip(folder / "bomb.pt", {"archive/data.pkl": bytes(200 * 2**20),
                                            "archive/version": b"3\n"}, zipfile.ZIP_DEFLATED)


def _nested_zip(depth: int, inner: bytes) -> bytes:
    for level in range(depth):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr(f"level{level}/data.pkl", inner)
        inner = buffer.getvalue()
    return inner


def pt_nested_archives(folder: Path) -> Path:
    path = folder / "nested.pt"
    path.write_bytes(_nested_zip(40, b"\x80\x02}q\x00."))
    return path


def pt_terabyte_view(folder: Path) -> Path:
    """A tensor of 2**40 elements viewing a 1-element storage (stride 0)."""
    import torch

    huge = torch.zeros(1).as_strided(TERA, [0, 0, 0, 0])
    path = folder / "terabyte.pt"
    torch.save({"conv.weight": huge}, path)
    return path


def text_behind_pth(folder: Path) -> Path:
    path = folder / "notes.pth"
    path.write_text("these are not weights\n")
    return path


def safetensors_terabyte_dims(folder: Path) -> Path:
    return write_raw(folder / "terabyte.safetensors",
                     [("conv.weight", np.zeros((1, 1, 3, 3), np.float32))],
                     header_entries={"conv.weight": {"dtype": "F32", "shape": TERA,
                                                     "data_offsets": [0, 36]}})


def safetensors_huge_header(folder: Path) -> Path:
    path = folder / "huge_header.safetensors"
    path.write_bytes(struct.pack("<Q", 2**63) + b'{"a": 1}')
    return path


def safetensors_offsets_outside(folder: Path) -> Path:
    return write_raw(folder / "offsets.safetensors",
                     [("conv.weight", np.zeros((1, 1, 3, 3), np.float32))],
                     header_entries={"conv.weight": {"dtype": "F32", "shape": [1, 1, 3, 3],
                                                     "data_offsets": [2**40, 2**40 + 36]}})


def safetensors_not_json(folder: Path) -> Path:
    path = folder / "not_json.safetensors"
    path.write_bytes(struct.pack("<Q", 16) + b"{not json at all")
    return path


def safetensors_zero_sized(folder: Path) -> Path:
    return write_raw(folder / "zero_sized.safetensors",
                     [("conv.weight", np.zeros((0, 3, 3, 3), np.float32))])


def _keras_layers():
    return writers_keras.network_layers(equivalence_network())


def keras_config_bomb(folder: Path) -> Path:
    """config.json deflated from 300 MB of spaces."""
    path = writers_keras.write_keras(folder / "bomb.keras", _keras_layers())
    with zipfile.ZipFile(path) as archive:
        members = {n: archive.read(n) for n in archive.namelist() if n != "config.json"}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("config.json", b"{" + b" " * (300 * 2**20) + b"}")
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def keras_nested_archives(folder: Path) -> Path:
    path = folder / "nested.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps({"class_name": "Functional"}))
        archive.writestr("model.weights.h5", _nested_zip(40, b"{}"))
    return path


def _huge_dataset(handle: h5py.Group, name: str) -> None:
    # Chunked and never written: HDF5 stores no data, the file stays a few kB.
    handle.create_dataset(name, shape=(3, 3, 1 << 20, 1 << 20), dtype="f4", chunks=(3, 3, 1, 64))


def keras_h5_terabyte_kernel(folder: Path) -> Path:
    path = writers_keras.write_keras_h5(folder / "terabyte.h5", _keras_layers())
    with h5py.File(path, "a") as handle:
        found = []
        handle.visititems(lambda name, obj: found.append(name)
                          if isinstance(obj, h5py.Dataset) and obj.ndim == 4 else None)
        del handle[found[0]]
        _huge_dataset(handle, found[0])
    return path


def keras_truncated(folder: Path) -> Path:
    data = writers_keras.write_keras(folder / "full.keras", _keras_layers()).read_bytes()
    (folder / "full.keras").unlink()
    path = folder / "truncated.keras"
    path.write_bytes(data[: len(data) // 2])
    return path


def _keras_with_signature_broken(folder: Path, name: str, signature: bytes,
                                 occurrence: int) -> Path:
    """A .keras archive whose (stored, uncompressed) weights file has the
    ``occurrence``-th HDF5 ``signature`` overwritten: a group h5py cannot list."""
    path = writers_keras.write_keras(folder / name, _keras_layers())
    data = path.read_bytes()
    at = -1
    for _ in range(occurrence + 1):
        at = data.index(signature, at + 1)
    path.write_bytes(data[:at] + b"X" + data[at + 1:])
    return path


def keras_bad_symbol_table(folder: Path) -> Path:
    """Found by the fuzzer: h5py raised RuntimeError while listing a layer's group."""
    return _keras_with_signature_broken(folder, "snod.keras", b"SNOD", 1)


def keras_bad_btree(folder: Path) -> Path:
    """Found by the fuzzer: h5py raised RuntimeError on a group's B-tree."""
    return _keras_with_signature_broken(folder, "tree.keras", b"TREE", 2)


def zip_version_93(folder: Path) -> Path:
    """Found by the fuzzer: zipfile raised NotImplementedError in the Keras sniffer for
    an archive needing "version 9.3" to extract."""
    path = pt_sample(folder)
    data = bytearray(path.read_bytes())
    central = data.find(b"PK\x01\x02")  # first central directory entry
    data[central + 6:central + 8] = (93).to_bytes(2, "little")  # version needed
    path.write_bytes(bytes(data))
    return path


def text_behind_h5(folder: Path) -> Path:
    path = folder / "weights.h5"
    path.write_text("name,value\nconv,1\n")
    return path


def _tflite_conv(weight_shape, data: bytes) -> bytes:
    m = writers_tflite.ModelDef()
    x = m.tensor("x", [1, 8, 8, weight_shape[-1]])
    w = m.tensor("w", weight_shape)
    m.tensors[w].data = data
    y = m.tensor("y", [1, 8, 8, weight_shape[0]])
    m.op(writers_tflite.BuiltinOperator.CONV_2D, [x, w], [y], stride=1)
    m.inputs, m.outputs = [x], [y]
    return m.serialize()


def tflite_terabyte_dims(folder: Path) -> Path:
    path = folder / "terabyte.tflite"
    path.write_bytes(_tflite_conv([1 << 20, 3, 3, 1 << 20], b"\0" * 36))
    return path


def tflite_truncated(folder: Path) -> Path:
    data = _tflite_conv([4, 3, 3, 2], np.ones(72, np.float32).tobytes())
    path = folder / "truncated.tflite"
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


def onnx_behind_tflite(folder: Path) -> Path:
    path = folder / "mislabelled.tflite"
    path.write_bytes(b"TFL3" * 4 + good_onnx(folder, "tmp.onnx").read_bytes()[:100])
    (folder / "tmp.onnx").unlink()
    return path


def pt_sample(folder: Path) -> Path:
    """A valid torch.save state dict of the equivalence network."""
    from ..readers.writers_torch import write

    return write(folder / "sample.pt", equivalence_network(), "state_dict")


def truncated(path: Path) -> Path:
    """``path`` cut to two thirds of its length, renamed ``truncated-NAME``."""
    data = path.read_bytes()
    target = path.with_name(f"truncated-{path.name}")
    target.write_bytes(data[: len(data) * 2 // 3])
    path.unlink()
    return target


def safetensors_sample(folder: Path) -> Path:
    """A valid safetensors file of the equivalence network (for the fuzzers)."""
    return write_safetensors(folder / "sample.safetensors", equivalence_network())


def tflite_sample(folder: Path) -> Path:
    """A valid float32 TFLite file of the equivalence network (for the fuzzers)."""
    path = folder / "sample.tflite"
    path.write_bytes(writers_tflite.network_model(equivalence_network()).serialize())
    return path


def keras_sample(folder: Path) -> Path:
    """A valid .keras archive of the equivalence network."""
    return writers_keras.write_keras(folder / "sample.keras", _keras_layers())


#: Valid files per format, the starting points of truncation and mutation.
SAMPLES = {"onnx": good_onnx, "pt": pt_sample, "safetensors": safetensors_sample,
           "keras": keras_sample, "tflite": tflite_sample}

#: case name -> (builder, pattern the refusal must match)
CASES = {
    "onnx-terabyte-dims": (onnx_terabyte_dims, r"declares"),
    "onnx-external-dotdot": (onnx_external_dotdot, r"external data"),
    "onnx-external-absolute": (onnx_external_absolute, r"external data"),
    "onnx-external-symlink": (onnx_external_symlink, r"external data"),
    "onnx-cyclic-graph": (onnx_cyclic_graph, r"cycl"),
    "onnx-zero-sized": (onnx_zero_sized, r"empty weight of shape \(0, 3, 3, 3\)"),
    "png-behind-onnx": (png_behind_onnx, r"not a valid ONNX"),
    "empty-onnx": (empty_onnx, r"empty file \(0 bytes\)"),
    "onnx-truncated": (lambda folder: truncated(good_onnx(folder, "t.onnx")), r"ONNX"),
    "pt-legacy-pickle-runs-code": (pt_legacy_pickle_runs_code, r"refuses to unpickle"),
    "pt-zip-pickle-runs-code": (pt_zip_pickle_runs_code,
                                r"holds no tensors \(a stand-in for \w+\.system, which was "
                                r"not run"),
    "pt-builtins-eval": (pt_builtins_eval,
                         r"holds no tensors \(a stand-in for builtins\.eval, which was not run"),
    "torchscript-evil-constants": (torchscript_evil_constants, r"TorchScript"),
    "pt-zip-bomb": (pt_zip_bomb, r"'archive/data.pkl' would inflate to \d+ bytes"),
    "pt-nested-archives": (pt_nested_archives, r"not a readable PyTorch file"),
    "pt-terabyte-view": (pt_terabyte_view, r"beyond the element limit"),
    "pt-truncated": (lambda folder: truncated(pt_sample(folder)), r"zip archive"),
    "text-behind-pth": (text_behind_pth, r"not a PyTorch file"),
    "safetensors-terabyte-dims": (safetensors_terabyte_dims, r"declares shape"),
    "safetensors-huge-header": (safetensors_huge_header, r"does not fit"),
    "safetensors-offsets-outside": (safetensors_offsets_outside, r"ends at byte"),
    "safetensors-not-json": (safetensors_not_json, r"not JSON"),
    "safetensors-zero-sized": (safetensors_zero_sized, r"empty weight"),
    "safetensors-truncated": (lambda folder: truncated(safetensors_sample(folder)),
                              r"truncated"),
    "keras-config-bomb": (keras_config_bomb, r"config.json of \d+ bytes exceeds the limit"),
    "keras-nested-archives": (keras_nested_archives, r"not a readable HDF5 file"),
    "keras-h5-terabyte-kernel": (keras_h5_terabyte_kernel, r"\(3, 3, 1048576, 1048576\)"),
    "keras-truncated": (keras_truncated, r"damaged .keras archive"),
    "text-behind-h5": (text_behind_h5, r"not a Keras file"),
    "keras-bad-symbol-table": (keras_bad_symbol_table, r"damaged HDF5 file \(RuntimeError"),
    "keras-bad-btree": (keras_bad_btree, r"damaged HDF5 file \(RuntimeError"),
    "pt-zip-version-93": (zip_version_93, r"damaged or truncated zip archive"),
    "tflite-terabyte-dims": (tflite_terabyte_dims, r"beyond the element limit"),
    "tflite-truncated": (tflite_truncated, r"corrupted TFLite"),
    "onnx-behind-tflite": (onnx_behind_tflite, r"corrupted TFLite"),
}
