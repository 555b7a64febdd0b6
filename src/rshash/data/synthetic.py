"""Seeded synthetic aerial-like scenes, so tests and demos need no downloaded data.

Each class is a procedural texture with real within-class variation (random
orientation, scale, layout, colour jitter and sensor noise), so the classes are
separable, but not by a constant colour: a retrieval model has something to
learn, and a broken one visibly fails. Only numpy is used to generate; Pillow
only to save files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

Scene = np.ndarray  # (size, size, 3) float in ~[0, 1]
Generator = Callable[[np.random.Generator, int], Scene]


# --------------------------------------------------------------------------- primitives


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates ``(y, x)`` as float arrays."""
    y, x = np.mgrid[0:size, 0:size]
    return y.astype(np.float64), x.astype(np.float64)


def _rotated(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates ``(u, v)`` in a frame rotated by a random angle about the centre."""
    y, x = _grid(size)
    theta = rng.uniform(0, np.pi)
    c, s = np.cos(theta), np.sin(theta)
    y, x = y - size / 2, x - size / 2
    return x * c + y * s, -x * s + y * c


def _value_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth random field in [0, 1]: a ``cells`` x ``cells`` lattice, smoothstep-interpolated."""
    lattice = rng.random((cells + 1, cells + 1))
    t = np.linspace(0, cells, size, endpoint=False)
    i = t.astype(int)
    f = t - i
    f = f * f * (3 - 2 * f)
    rows = lattice[i] * (1 - f)[:, None] + lattice[i + 1] * f[:, None]
    return rows[:, i] * (1 - f)[None, :] + rows[:, i + 1] * f[None, :]


def _fbm(rng: np.random.Generator, size: int, cells: int, octaves: int = 3) -> np.ndarray:
    """Fractal noise in ~[0, 1]: octaves of value noise with halving weight."""
    total = sum(0.5**o * _value_noise(rng, size, cells * 2**o) for o in range(octaves))
    return total / sum(0.5**o for o in range(octaves))


def _jitter(rng: np.random.Generator, rgb: tuple[float, float, float], amount: float = 0.06) -> np.ndarray:
    """A base colour with a random per-channel shift."""
    return np.clip(np.asarray(rgb) + rng.normal(0, amount, 3), 0, 1)


def _mix(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> Scene:
    """Blend colours ``a`` (t=0) and ``b`` (t=1) per pixel."""
    return a * (1 - t[..., None]) + b * t[..., None]


def _paint(img: Scene, mask: np.ndarray, colour: np.ndarray) -> Scene:
    img[mask] = colour
    return img


def _rectangles(
    rng: np.random.Generator, size: int, count: int, half: tuple[float, float]
) -> list[np.ndarray]:
    """Masks of ``count`` randomly placed rectangles sharing one random orientation."""
    u, v = _rotated(rng, size)
    span = size / 2
    masks = []
    for _ in range(count):
        cu, cv = rng.uniform(-span, span, 2)
        hu, hv = rng.uniform(*half, 2)
        masks.append((np.abs(u - cu) < hu) & (np.abs(v - cv) < hv))
    return masks


# --------------------------------------------------------------------------- classes


def _agricultural(rng: np.random.Generator, size: int) -> Scene:
    """Two crop fields split by a random line, each with rows at its own angle and pitch."""
    split = _rotated(rng, size)[0] + rng.uniform(-size / 4, size / 4)
    img = np.empty((size, size, 3))
    for side in (split < 0, split >= 0):
        u, _ = _rotated(rng, size)
        rows = 0.5 + 0.5 * np.sin(2 * np.pi * u / rng.uniform(3, 8))
        crop = _jitter(rng, (rng.uniform(0.3, 0.55), rng.uniform(0.45, 0.6), 0.2), 0.08)
        soil = _jitter(rng, (0.55, 0.45, 0.3))
        img[side] = _mix(soil, crop, rows)[side]
    return img


def _water(rng: np.random.Generator, size: int) -> Scene:
    """Smooth deep blue with faint directional ripples."""
    u, _ = _rotated(rng, size)
    ripples = 0.5 + 0.5 * np.sin(2 * np.pi * u / rng.uniform(4, 10) + 3 * _value_noise(rng, size, 3))
    shade = 0.6 * _fbm(rng, size, 2) + 0.4 * ripples
    return _mix(_jitter(rng, (0.05, 0.18, 0.35)), _jitter(rng, (0.15, 0.32, 0.5)), shade)


def _roads(rng: np.random.Generator, size: int) -> Scene:
    """Grey road grid at a random angle and spacing over grassy ground."""
    u, v = _rotated(rng, size)
    spacing, width = rng.uniform(16, 32), rng.uniform(1.5, 3.5)
    on_road = (np.abs((u % spacing) - spacing / 2) < width) | (np.abs((v % spacing) - spacing / 2) < width)
    ground = _mix(_jitter(rng, (0.35, 0.45, 0.25)), _jitter(rng, (0.5, 0.5, 0.35)), _fbm(rng, size, 4))
    return _paint(ground, on_road, _jitter(rng, (0.5, 0.5, 0.5), 0.04))


def _residential(rng: np.random.Generator, size: int) -> Scene:
    """Scattered roofs in assorted colours among lawns, one street through the block."""
    img = _mix(_jitter(rng, (0.3, 0.45, 0.25)), _jitter(rng, (0.45, 0.5, 0.35)), _fbm(rng, size, 5))
    u, _ = _rotated(rng, size)
    img = _paint(img, np.abs(u - rng.uniform(-size / 3, size / 3)) < 2.5, _jitter(rng, (0.45, 0.45, 0.45)))
    roofs = ((0.6, 0.3, 0.25), (0.45, 0.4, 0.4), (0.7, 0.65, 0.6), (0.4, 0.25, 0.2))
    for mask in _rectangles(rng, size, int(rng.integers(6, 14)), (2.5, 5.5)):
        img = _paint(img, mask, _jitter(rng, roofs[rng.integers(len(roofs))], 0.05))
    return img


def _forest(rng: np.random.Generator, size: int) -> Scene:
    """Dense canopy: dark and light greens in blotchy fractal clumps with shadowed gaps."""
    canopy = _fbm(rng, size, int(rng.integers(4, 9)))
    shadow = np.clip((canopy - 0.3) * 3, 0, 1)
    img = _mix(_jitter(rng, (0.08, 0.2, 0.08)), _jitter(rng, (0.25, 0.42, 0.18)), canopy)
    return img * (0.5 + 0.5 * shadow[..., None])


def _beach(rng: np.random.Generator, size: int) -> Scene:
    """Sand meeting the sea along a wavy shoreline, with a line of surf."""
    u, v = _rotated(rng, size)
    shore = u + rng.uniform(-size / 4, size / 4) + 3 * np.sin(v / rng.uniform(4, 10))
    sand = _mix(_jitter(rng, (0.8, 0.72, 0.55)), _jitter(rng, (0.7, 0.62, 0.45)), _fbm(rng, size, 6))
    sea = _mix(_jitter(rng, (0.1, 0.3, 0.45)), _jitter(rng, (0.2, 0.45, 0.55)), _fbm(rng, size, 3))
    img = np.where((shore < 0)[..., None], sea, sand)
    return _paint(img, np.abs(shore + 1.5) < rng.uniform(0.8, 2.0), _jitter(rng, (0.9, 0.92, 0.92), 0.03))


def _chaparral(rng: np.random.Generator, size: int) -> Scene:
    """Dry tan ground with sparse dark shrubs."""
    ground = _mix(_jitter(rng, (0.6, 0.5, 0.38)), _jitter(rng, (0.5, 0.42, 0.32)), _fbm(rng, size, 4))
    shrubs = _value_noise(rng, size, int(rng.integers(10, 18))) > rng.uniform(0.68, 0.8)
    return _paint(ground, shrubs, _jitter(rng, (0.25, 0.3, 0.15), 0.04))


def _parkinglot(rng: np.random.Generator, size: int) -> Scene:
    """Asphalt with painted bays and rows of colourful cars."""
    u, v = _rotated(rng, size)
    img = _mix(_jitter(rng, (0.3, 0.3, 0.32)), _jitter(rng, (0.4, 0.4, 0.42)), _fbm(rng, size, 6))
    pitch = rng.uniform(4, 6)
    img = _paint(img, (np.abs(u % pitch) < 0.6) & (np.abs(v % 14) < 5), np.array([0.85, 0.85, 0.8]))
    cars = (np.abs(v % 14 - 2.5) < 2.2) & (np.abs(u % pitch - pitch / 2) < 1.2)
    cars &= _value_noise(rng, size, 12) > 0.35
    bay = (np.floor(u / pitch) * 7 + np.floor(v / 14) * 13).astype(int) % 16
    palette = rng.uniform(0.1, 0.9, (16, 3))
    img[cars] = palette[bay[cars]]
    return img


#: Class name -> generator; ``classes=N`` takes the first N.
SCENE_CLASSES: dict[str, Generator] = {
    "agricultural": _agricultural,
    "water": _water,
    "roads": _roads,
    "residential": _residential,
    "forest": _forest,
    "beach": _beach,
    "chaparral": _chaparral,
    "parkinglot": _parkinglot,
}


# --------------------------------------------------------------------------- public API


def _finish(rng: np.random.Generator, scene: Scene) -> np.ndarray:
    """Global illumination/contrast jitter plus sensor noise, to 8-bit."""
    gain = rng.uniform(0.85, 1.15) * rng.uniform(0.95, 1.05, 3)
    scene = (scene - 0.5) * rng.uniform(0.85, 1.15) + 0.5
    scene = scene * gain + rng.normal(0, rng.uniform(0.01, 0.04), scene.shape)
    return np.clip(scene * 255 + 0.5, 0, 255).astype(np.uint8)


def _class_list(classes: int) -> list[str]:
    if not 1 <= classes <= len(SCENE_CLASSES):
        raise ValueError(f"classes must be in 1..{len(SCENE_CLASSES)}, got {classes}")
    return list(SCENE_CLASSES)[:classes]


def synthetic_scene(name: str, index: int, size: int = 64, seed: int = 0) -> np.ndarray:
    """Scene ``index`` of class ``name`` as ``(size, size, 3) uint8``.

    Seeded per (seed, class, index), so an image does not change when the
    number of classes or images per class does.
    """
    rng = np.random.default_rng([seed, list(SCENE_CLASSES).index(name), index])
    return _finish(rng, SCENE_CLASSES[name](rng, size))


def synthetic_scenes(
    classes: int = 6, per_class: int = 20, size: int = 64, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``(N, size, size, 3) uint8`` scenes and their ``(N,)`` int labels (class-major order).

    Label ``k`` is the class ``list(SCENE_CLASSES)[k]``.
    """
    names = _class_list(classes)
    images = np.stack([synthetic_scene(n, i, size, seed) for n in names for i in range(per_class)])
    return images, np.repeat(np.arange(classes), per_class)


def make_synthetic_dataset(
    root: str | Path, classes: int = 6, per_class: int = 20, size: int = 64, seed: int = 0, fmt: str = "png"
) -> list[Path]:
    """Write ``root/<class>/<class>_NNN.<fmt>`` (a layout ``scan_folder`` reads); return the paths."""
    root = Path(root)
    paths = []
    for name in _class_list(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            path = root / name / f"{name}_{i:03d}.{fmt.lstrip('.').lower()}"
            Image.fromarray(synthetic_scene(name, i, size, seed)).save(path)
            paths.append(path)
    return paths
