"""Write the equivalence network (and broken variants) as safetensors files.

:func:`write_safetensors` uses the safetensors library's numpy API, which sorts the
header by dtype and name; its keys carry the layer index the way a PyTorch
``nn.Sequential`` state dict does (``features.0.plain.weight``), so the reader's
numeric-aware name order gives back the network's order. :func:`write_raw` writes the
bytes by hand, in the order given, for headers the library would refuse or reorder.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import ml_dtypes
import numpy as np

from .network import ConvSpec

_DTYPE_NAMES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64",
                "int8": "I8"}


def cast(weight: np.ndarray, dtype: str) -> np.ndarray:
    """``weight`` stored as ``dtype`` ("float32", "float16", "bfloat16", ...)."""
    return weight.astype(ml_dtypes.bfloat16 if dtype == "bfloat16" else np.dtype(dtype))


def state_dict(network: list[ConvSpec], dtype: str = "float32") -> dict[str, np.ndarray]:
    """``features.<i>.<name>.weight`` and ``.bias`` per layer, in network order."""
    tensors = {}
    for index, spec in enumerate(network):
        tensors[f"features.{index}.{spec.name}.weight"] = cast(spec.weight, dtype)
        tensors[f"features.{index}.{spec.name}.bias"] = cast(
            np.zeros(spec.c_out, np.float32), dtype)
    return tensors


def write_safetensors(path: Path, network: list[ConvSpec], dtype: str = "float32") -> Path:
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state_dict(network, dtype), str(path), metadata={"format": "pt"})
    return path


def write_raw(path: Path, tensors: list[tuple[str, np.ndarray]], *,
              header_entries: dict | None = None, metadata: dict | None = None) -> Path:
    """Tensors in the given order, header entries overridable (for malformed files)."""
    header: dict = {"__metadata__": metadata} if metadata else {}
    chunks, offset = [], 0
    for name, array in tensors:
        data = np.ascontiguousarray(array).tobytes()
        dtype = "BF16" if array.dtype == ml_dtypes.bfloat16 else _DTYPE_NAMES[array.dtype.name]
        header[name] = {"dtype": dtype, "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    header.update(header_entries or {})
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(chunks))
    return path


def write_ordered(path: Path, network: list[ConvSpec]) -> Path:
    """``<name>.weight`` keys in network order, the order another writer might keep."""
    return write_raw(path, [(f"{spec.name}.weight", spec.weight) for spec in network])
