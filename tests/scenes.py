"""Small two-class scene folders for index tests: flat colour patches versus blocky textures, with noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_scenes(root: Path, labels: tuple[str, str], per_class: int, seed: int, size: int = 40,
                 blocks: int = 8, noise: float = 20.0) -> Path:
    """``root/<label>/<i>.png``: the first label flat colour, the second ``blocks`` x ``blocks`` colour blocks."""
    rng = np.random.default_rng(seed)
    for label in labels:
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            base = rng.integers(0, 256, (1, 1, 3)) if label == labels[0] else rng.integers(0, 256, (blocks, blocks, 3))
            img = np.kron(base, np.ones((size // base.shape[0], size // base.shape[1], 1))) + rng.normal(0, noise, (size, size, 3))
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / label / f"{i}.png")
    return root
