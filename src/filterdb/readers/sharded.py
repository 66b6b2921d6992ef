"""Sharded checkpoints: one model whose state dict is split over several files.

Hugging Face transformers and diffusers save a large model as shards
(``model-00001-of-00003.safetensors``, ``pytorch_model-00001-of-00002.bin``) and an
index file beside them (``model.safetensors.index.json``,
``diffusion_pytorch_model.safetensors.index.json``, ``pytorch_model.bin.index.json``)
whose ``weight_map`` names the shard of every tensor. The index is the model: it is
read as the one state dict of all its shards, by the safetensors or the PyTorch
reader, and the shards it names are not models of their own (:func:`members`).

Shards must lie in the index's folder (a ``weight_map`` entry with a path is refused:
an index must not make the reader open files elsewhere), all of one format.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from ..errors import ModelReadError
from ..records import ModelRecord

NAME = "sharded"
EXTENSIONS = {".json"}

#: Index files as transformers and diffusers name them.
_INDEX_NAME = re.compile(r"\.(safetensors|bin)\.index\.json$", re.IGNORECASE)
#: Largest index read; real ones are kilobytes to a few megabytes.
MAX_INDEX_BYTES = 64 * 2**20


def sniff(head: bytes, path: Path) -> bool:
    """An index file's name, and JSON content."""
    return bool(_INDEX_NAME.search(Path(path).name)) and head.lstrip()[:1] == b"{"


def members(path: Path) -> list[Path]:
    """The shard files an index file names that exist, in the order they first appear
    (also when the index cannot be read as a whole: a missing shard fails the index, not
    make the others models of their own); [] when ``path`` is no readable index."""
    path = Path(path)
    try:
        names = _shard_names(path)
    except (ModelReadError, OSError):
        return []
    return [path.parent / name for name in names
            if name != path.name and (path.parent / name).is_file()]


def read(path: Path, limits) -> ModelRecord:
    from . import safetensors, torch

    path = Path(path)
    shards = _shards(path)
    for shard in shards:
        size = shard.stat().st_size
        if size > limits.max_file_bytes:
            raise ModelReadError(shard, f"file of {size} bytes exceeds the limit of "
                                        f"{limits.max_file_bytes} bytes")
    suffixes = {shard.suffix.lower() for shard in shards}
    if suffixes == {".safetensors"}:
        record = safetensors.read_shards(path, shards, limits)
    elif suffixes <= {".bin", ".pt", ".pth"}:
        record = torch.read_shards(path, shards, limits)
    else:
        raise ModelReadError(path, f"shards of formats {', '.join(sorted(suffixes))}: "
                                   "expected safetensors or PyTorch shards of one format")
    record.name = path.name[:_INDEX_NAME.search(path.name).start()]
    return record


def _shards(path: Path) -> list[Path]:
    names = _shard_names(path)
    if path.name in names:
        raise ModelReadError(path, "the index names itself as a shard")
    shards = [path.parent / name for name in names]
    missing = [shard.name for shard in shards if not shard.is_file()]
    if missing:
        raise ModelReadError(path, f"shard {missing[0]} is missing"
                                   + (f" (and {len(missing) - 1} more)" if len(missing) > 1
                                      else ""))
    return shards


def _shard_names(path: Path) -> list[str]:
    """The shard file names of an index's ``weight_map``, in the order they first appear."""
    size = path.stat().st_size
    if size > MAX_INDEX_BYTES:
        raise ModelReadError(path, f"index file of {size} bytes exceeds the limit of "
                                   f"{MAX_INDEX_BYTES} bytes")
    try:
        index = json.loads(path.read_bytes())
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise ModelReadError(path, f"index file is not JSON ({type(error).__name__})") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ModelReadError(path, "index file without a weight_map of tensor -> shard")
    for name in weight_map.values():
        if not isinstance(name, str) or not name or os.path.basename(name) != name \
                or name in (".", ".."):
            raise ModelReadError(path, f"weight_map names a shard {name!r}, not a file "
                                       "name in the index's folder")
    return list(dict.fromkeys(weight_map.values()))


def cannot_run(path: Path) -> str:
    """Why this model cannot be run: always a reason."""
    return "a sharded checkpoint holds weights only, no graph to run"
