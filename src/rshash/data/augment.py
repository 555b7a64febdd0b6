"""Augmented views of a chip for self-supervised training: crop and rescale, colour, rotation and flip.

A view is what the same place could look like in another acquisition or framing: a random crop covering
``crop_area`` of the chip (aspect 3:4..4:3) resized back to the chip's size, brightness, contrast, saturation and
per-channel gain jitter, then one of the eight dihedral transforms. View 0 is always the chip itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from .images import dihedral


@dataclass(frozen=True)
class Augment:
    """Random view parameters (ranges of uniform draws)."""

    crop_area: tuple[float, float] = (0.45, 1.0)
    brightness: tuple[float, float] = (0.7, 1.3)
    contrast: tuple[float, float] = (0.7, 1.3)
    saturation: tuple[float, float] = (0.6, 1.4)
    channel_gain: tuple[float, float] = (0.9, 1.1)

    def __call__(self, chip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One random view of a uint8 ``(S, S, 3)`` chip, same shape (no dihedral transform)."""
        s = chip.shape[0]
        area = rng.uniform(*self.crop_area)
        aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        w = min(s, max(1, int(round(s * np.sqrt(area * aspect)))))
        h = min(s, max(1, int(round(s * np.sqrt(area / aspect)))))
        x, y = int(rng.integers(0, s - w + 1)), int(rng.integers(0, s - h + 1))
        f = np.asarray(Image.fromarray(chip[y:y + h, x:x + w]).resize((s, s), Image.BILINEAR), dtype=np.float32)
        f = f * rng.uniform(*self.brightness)
        m = f.mean()
        f = (f - m) * rng.uniform(*self.contrast) + m
        g = f.mean(axis=2, keepdims=True)
        f = (f - g) * rng.uniform(*self.saturation) + g
        f = f * rng.uniform(*self.channel_gain, size=3)
        return np.clip(f, 0, 255).astype(np.uint8)


def chip_views(chip: np.ndarray, views: int, rng: np.random.Generator, augment: Augment = Augment()) -> np.ndarray:
    """``(views, S, S, 3)``: the chip itself, then ``views - 1`` augmented views, view v under dihedral transform v
    (mod 8)."""
    out = [chip]
    for v in range(1, views):
        out.append(dihedral(augment(chip, rng)[None], v % 8)[0])
    return np.stack(out)
