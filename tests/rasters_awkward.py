"""Awkward and broken rasters a user meets, each with the outcome indexing it must have:
:func:`write_awkward_rasters` (used by tests/test_raster_robustness.py and benchmarks/geo_robustness.py).

Every raster is small (at most 512 x 512 pixels of 0.3 m, so a handful of 256-pixel chips at the model's
0.3 m ground resolution, ``gsd="auto"``); indexing the folder in one run with the default options gives each
file the outcome recorded beside it:

- ``indexed``: True when at least one of its chips is in the index afterwards, False when none is;
- ``reason_contains``: for a file not indexed (or indexed only in part), a piece of the reason the run
  reports: the skip's reason in ``add_report.json`` ``skipped``, the ``reason`` of its ``rasters`` entry, or
  a key of that entry's ``skipped`` chip counts (``nodata``);
- ``status`` (where it matters): ``partial`` for a file whose later blocks cannot be read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.transform import from_origin

#: UTM 33N, metres.
UTM = "EPSG:32633"
RES = 0.3


def _write(path: Path, data: np.ndarray, crs: str | None = UTM, transform: Affine | None = None,
           **profile) -> Path:
    count, height, width = data.shape
    if transform is None:
        transform = from_origin(500000, 5000000, RES, RES)
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=count, dtype=data.dtype.name,
                       crs=crs, transform=transform, **profile) as ds:
        ds.write(data)
    return path


def _scene(rng: np.random.Generator, count: int, size: int, high: int = 255, dtype: str = "uint8") -> np.ndarray:
    """Textured pixels (a gradient plus noise), never flat."""
    ramp = np.linspace(0, high * 0.6, size)[None, None, :]
    noise = rng.integers(0, max(2, int(high * 0.4)), (count, size, size))
    return (ramp + noise).astype(dtype)


def write_awkward_rasters(folder: str | Path) -> dict[str, dict]:
    """Write the awkward rasters into ``folder`` (created); return ``{file name: expected outcome}``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(16)
    expected: dict[str, dict] = {}

    _write(folder / "good_rgb.tif", _scene(rng, 3, 512))
    expected["good_rgb.tif"] = {"indexed": True}

    # Truncated: the header and the first three of four block rows are intact, the last is cut off.
    truncated = _write(folder / "truncated.tif", _scene(rng, 3, 512), tiled=True, blockxsize=128, blockysize=128,
                       compress="deflate")
    with open(truncated, "r+b") as fh:
        fh.truncate(int(truncated.stat().st_size * 0.8))
    expected["truncated.tif"] = {"indexed": True, "status": "partial", "reason_contains": "could not be read"}

    (folder / "not_a_raster.tif").write_text("this is a text file, not a GeoTIFF\n")
    expected["not_a_raster.tif"] = {"indexed": False, "reason_contains": "cannot open"}

    _write(folder / "no_crs.tif", _scene(rng, 3, 256), crs=None, transform=Affine.identity())
    expected["no_crs.tif"] = {"indexed": False, "reason_contains": "gsd='native'"}

    _write(folder / "all_nodata.tif", np.zeros((3, 256, 256), np.uint8), nodata=0)
    expected["all_nodata.tif"] = {"indexed": False, "reason_contains": "nodata"}

    _write(folder / "tiny_10px.tif", _scene(rng, 3, 10))
    expected["tiny_10px.tif"] = {"indexed": True}

    y, x = np.mgrid[0:384, 0:384]
    dem = (200 + 0.3 * x + 20 * np.sin(y / 25.0) + rng.normal(0, 2, (384, 384))).astype(np.float32)[None]
    dem[:, :40, :40] = -9999.0
    _write(folder / "float_dem.tif", dem, nodata=-9999.0)
    expected["float_dem.tif"] = {"indexed": True}

    rotated = from_origin(500000, 5000000, RES, RES) @ Affine.rotation(20)
    _write(folder / "rotated.tif", _scene(rng, 3, 384), transform=rotated)
    expected["rotated.tif"] = {"indexed": True}

    palette = _scene(rng, 1, 384) // 32  # 8 classes
    colours = {i: (i * 30 % 256, 255 - i * 30, (i * 70) % 256, 255) for i in range(256)}
    with rasterio.open(_write(folder / "palette.tif", palette.astype(np.uint8), photometric="palette"), "r+") as ds:
        ds.write_colormap(1, colours)
    expected["palette.tif"] = {"indexed": True}

    # Across the antimeridian: EPSG:4326, longitudes 179.9995 .. 180.0005 at the equator (about 0.22 m pixels).
    deg = 0.001 / 512
    _write(folder / "antimeridian.tif", _scene(rng, 3, 512), crs="EPSG:4326",
           transform=from_origin(180.0 - 0.0005, 0.0005, deg, deg))
    expected["antimeridian.tif"] = {"indexed": True}

    _write(folder / "multiband_uint16.tif", _scene(rng, 4, 384, high=4000, dtype="uint16"))
    expected["multiband_uint16.tif"] = {"indexed": True}

    return expected


def outcomes(report: dict, folder: str | Path) -> dict[str, dict]:
    """Per file of ``folder``: what a run's report (``add_report.json`` / ``RasterAddReport.to_dict()``) says
    happened: ``{"indexed": bool, "status": str | None, "reasons": str}`` (every reason text joined)."""
    out: dict[str, dict] = {}
    for p in sorted(Path(folder).iterdir()):
        out[p.name] = {"indexed": False, "status": None, "reasons": ""}
    for skip in report["skipped"]:
        name = Path(skip["path"]).name
        if name in out:
            out[name]["reasons"] += skip["reason"]
    for entry in report["rasters"]:
        name = Path(entry["path"]).name
        if name in out:
            out[name]["indexed"] = entry["added"] > 0
            out[name]["status"] = entry.get("status")
            out[name]["reasons"] += " ".join([entry.get("reason") or "", *entry["skipped"]])
    return out


def unexpected(expected: dict[str, dict], seen: dict[str, dict]) -> dict[str, tuple[dict, dict]]:
    """The files whose outcome differs from the expected one: ``{name: (expected, seen)}``."""
    bad = {}
    for name, want in expected.items():
        got = seen.get(name, {"indexed": False, "status": None, "reasons": "(not tried)"})
        ok = got["indexed"] == want["indexed"] and want.get("reason_contains", "") in got["reasons"]
        ok = ok and ("status" not in want or got["status"] == want["status"])
        if not ok:
            bad[name] = (want, got)
    return bad
