"""Training data that installed packages ship: scikit-learn's digits and sample photos.

* ``digits``: the 1,797 8x8 handwritten digits of ``sklearn.datasets.load_digits``,
  upsampled (bilinear) to 16x16 so that 3x3 filters see strokes, not pixels.
* ``photos``: the two 427x640 RGB photographs of ``sklearn.datasets.load_sample_images``
  (a Chinese temple and a flower). Patches cut at seeded random positions give a
  second, natural domain: classify which photo and quadrant a patch comes from,
  denoise patches, or pretrain on grey patches before fine-tuning on digits.

Nothing is downloaded. Reading the photos needs Pillow (scikit-learn decodes the
JPEG files with it); without Pillow, :func:`photos` falls back to two generated
images with the 1/f spectrum of natural scenes and says so in the dataset name.
Arrays are float32, standardised, in (N, C, H, W) layout.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

DIGITS = "sklearn digits (16x16)"
PHOTOS = "sklearn sample images (patches)"
PHOTOS_FALLBACK = "generated 1/f images (patches; Pillow missing)"


@dataclass(frozen=True)
class Dataset:
    """Inputs ``x`` (N, C, H, W) and integer labels ``y`` (N,), split in train and test."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.x_train.shape[1:])


def _upsample2(images: np.ndarray) -> np.ndarray:
    """Bilinear 2x upsampling of (N, H, W) images (half-pixel centres, edge clamped)."""
    n, h, w = images.shape
    def axis_weights(size):
        positions = (np.arange(2 * size) + 0.5) / 2 - 0.5
        low = np.clip(np.floor(positions).astype(int), 0, size - 1)
        high = np.clip(low + 1, 0, size - 1)
        frac = np.clip(positions - np.floor(positions), 0, 1)
        frac[positions < 0] = 0.0
        return low, high, frac
    rl, rh, rf = axis_weights(h)
    cl, ch, cf = axis_weights(w)
    rows = images[:, rl, :] * (1 - rf)[None, :, None] + images[:, rh, :] * rf[None, :, None]
    return rows[:, :, cl] * (1 - cf) + rows[:, :, ch] * cf


@lru_cache(maxsize=1)
def digits(test_share: float = 0.25, seed: int = 0) -> Dataset:
    """scikit-learn's digits at 16x16, one channel, standardised; a seeded split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = _upsample2(bunch.images.astype(np.float32) / 16.0)
    images = (images - images.mean()) / images.std()
    x = images[:, None].astype(np.float32)
    y = bunch.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    cut = int(round(len(x) * (1 - test_share)))
    train, test = order[:cut], order[cut:]
    return Dataset(DIGITS, x[train], y[train], x[test], y[test])


def photos_name() -> str:
    """The name of the photo data set this installation gives (see the module doc)."""
    return PHOTOS if importlib.util.find_spec("PIL") is not None else PHOTOS_FALLBACK


@lru_cache(maxsize=1)
def _photos() -> tuple[str, tuple[np.ndarray, ...]]:
    """The two sample photos as float32 (H, W, 3) in [0, 1], and the dataset name."""
    if photos_name() == PHOTOS_FALLBACK:
        return PHOTOS_FALLBACK, _generated_photos()
    from sklearn.datasets import load_sample_images

    images = load_sample_images().images
    return PHOTOS, tuple(np.asarray(image, dtype=np.float32) / 255.0 for image in images)


def _generated_photos(size: tuple[int, int] = (427, 640)) -> tuple[np.ndarray, ...]:
    """Two seeded RGB images with a 1/f amplitude spectrum (the statistics of scenes)."""
    out = []
    for seed in (0, 1):
        rng = np.random.default_rng(1000 + seed)
        fy = np.fft.fftfreq(size[0])[:, None]
        fx = np.fft.rfftfreq(size[1])[None, :]
        amplitude = 1.0 / np.maximum(np.hypot(fx, fy), 1.0 / max(size))
        channels = []
        for _ in range(3):
            phase = rng.uniform(0, 2 * np.pi, amplitude.shape)
            channel = np.fft.irfft2(amplitude * np.exp(1j * phase), s=size)
            channels.append((channel - channel.min()) / np.ptp(channel))
        mix = rng.dirichlet(np.ones(3), size=3)
        out.append(np.einsum("hwc,dc->hwd", np.stack(channels, -1), mix).astype(np.float32))
    return tuple(out)


def photo_patches(n: int, size: int = 16, grey: bool = False, seed: int = 0
                  ) -> tuple[str, np.ndarray, np.ndarray]:
    """``n`` patches cut at seeded random positions of the two photos.

    Returns the dataset name, patches (n, 3 or 1, size, size) standardised per
    channel, and labels ``photo * 4 + quadrant`` (8 classes: which photo, which
    quadrant of it the patch centre lies in).
    """
    name, images = _photos()
    rng = np.random.default_rng(seed)
    patches = np.empty((n, size, size, 3), np.float32)
    labels = np.empty(n, np.int64)
    for i in range(n):
        photo = int(rng.integers(len(images)))
        image = images[photo]
        h, w = image.shape[:2]
        top = int(rng.integers(0, h - size + 1))
        left = int(rng.integers(0, w - size + 1))
        patches[i] = image[top:top + size, left:left + size]
        quadrant = 2 * int(top + size / 2 >= h / 2) + int(left + size / 2 >= w / 2)
        labels[i] = photo * 4 + quadrant
    if grey:
        patches = patches @ np.array([[0.299], [0.587], [0.114]], np.float32)
    patches = patches.transpose(0, 3, 1, 2)
    mean = patches.mean(axis=(0, 2, 3), keepdims=True)
    std = patches.std(axis=(0, 2, 3), keepdims=True)
    return name, ((patches - mean) / std).astype(np.float32), labels


@lru_cache(maxsize=4)
def photos(n_train: int = 2000, n_test: int = 500, size: int = 16, grey: bool = False
           ) -> Dataset:
    """Patch classification (which photo, which quadrant) on the sample photos."""
    name, x, y = photo_patches(n_train + n_test, size, grey, seed=1 + grey)
    label = f"{name}, grey" if grey else name
    return Dataset(label, x[:n_train], y[:n_train], x[n_train:], y[n_train:])
