"""Geo robustness: awkward and broken rasters indexed in one run, and adversarial geo requests against a served
10^5-row index, each with its expected outcome.

1. **Bad rasters**: writes its own folder of awkward and broken rasters (``tests/rasters_awkward.py``: truncated
   GeoTIFF, text file named .tif, palette, no CRS, rotated, all nodata, 10 px, float DEM, across the
   antimeridian, ...), indexes the folder with ``rshash index --rasters`` in one process run, and records per file
   what happened (chips indexed, or skipped with the reason from ``add_report.json``) beside what was expected.
2. **Bounded requests**: builds an index of real 64 px chips of the shared rasters (native resolution, 50 %
   overlap) plus synthetic chip rows (clustered codes, as a trained model's, on a lon/lat grid) up to ``--rows``,
   starts ``rshash serve`` (uvicorn, one worker, over HTTP on loopback) and issues each adversarial request one at a
   time, each with its expected status code: per request the peak RSS increase of the server over its idle RSS
   (``/proc/PID/clear_refs`` reset before each) and the wall time; every request is sent twice (cold, then warm),
   and the first request per raster (overlays: read and warp) is reported separately.

    python benchmarks/geo_robustness.py                 # random-head 64-bit model, 10^5 rows
    python benchmarks/geo_robustness.py --model runs/ucmd/model
    python benchmarks/geo_robustness.py --quick         # 10^4 rows, a smoke test

Writes ``benchmarks/results/geo_robustness.json`` (``targets`` holds the issue's keys).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the awkward rasters are the tests' own
sys.path.insert(0, str(Path(__file__).parent))
from rasters_awkward import outcomes, unexpected, write_awkward_rasters  # noqa: E402
from results_doc import write_section  # noqa: E402
from serve_load import Server, describe_model, model_is_trained  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "geo_robustness.json"
SHARED_RASTERS = ROOT.parent / "shared" / "data" / "rasters"
LIMITS = {"bad_rasters_tried": 10, "max_request_rss_increase_mb_1e5": 200.0, "max_request_seconds_1e5": 1.0}


def _model(work: Path, model: Path | None, bits: int) -> Path:
    if model is not None:
        return model.absolute()
    from rshash.model import HashingModel, ModelConfig
    from rshash.model_dir import save_model_dir

    path = work / "model"
    save_model_dir(path, HashingModel(ModelConfig(bits=bits)))
    return path


# --------------------------------------------------------------------------- 1. bad rasters


def bad_rasters(work: Path, model: Path) -> dict:
    """Index the awkward folder in one CLI run with the default options; each file's outcome beside the expected."""
    folder = work / "awkward"
    folder.mkdir()
    expected = write_awkward_rasters(folder)
    index_dir = work / "awkward-index"
    cmd = [sys.executable, "-m", "rshash.cli", "index", "--model", str(model), "--rasters", str(folder),
           "--out", str(index_dir)]
    started = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True, env=os.environ | {"RSHASH_PROGRESS": "0"})
    seconds = time.perf_counter() - started
    report_path = index_dir / "add_report.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {"skipped": [], "rasters": []}
    seen = outcomes(report, folder)
    bad = unexpected(expected, seen)
    hide = lambda text: str(text).replace(str(work), "WORK")  # noqa: E731
    files = {name: {"expected": want, "seen": json.loads(hide(json.dumps(seen.get(name)))), "as_expected": name not in bad}
             for name, want in sorted(expected.items())}
    lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    return {"command": hide(" ".join(["rshash", *cmd[3:]])), "exit_code": run.returncode, "seconds": round(seconds, 1),
            "stopped": run.returncode != 0 or "Traceback" in run.stderr, "stderr_lines": len(lines),
            "stderr_tail": [hide(ln) for ln in lines[-8:]], "files": files, "chips_skipped": report.get("chips_skipped"),
            "unexpected": sorted(bad)}


# --------------------------------------------------------------------------- 2. the served 10^5-row index


def build_index(work: Path, model: Path, rasters: Path, rows: int) -> dict:
    """Real chips of the shared rasters, then synthetic chip rows up to ``rows`` (one synthetic raster grid)."""
    from rshash.geo import tables
    from rshash.index import Index
    from rshash.index.store import NewImage
    from rshash.index.synthetic import ClusteredCodes

    index_dir = work / "index"
    started = time.perf_counter()
    with Index.create(index_dir, model) as index:
        report = index.add_rasters(sorted(rasters.glob("*.tif")), gsd="native", tile=64, overlap=0.5, progress=False)
        real = len(index)
        store, bits, dims = index._store, index.bits, index.descriptor_dims
        n = max(0, rows - real)
        side = int(np.ceil(np.sqrt(max(n, 1))))
        step = 0.001  # degrees; neighbouring chips overlap by half, like the default tiling
        raster = {"path": "/synthetic/grid.tif", "sha256": "0" * 64, "crs": "EPSG:4326",
                  "transform": [step / 2, 0, 10.0, 0, -step / 2, 50.0], "width": side * 2 + 2,
                  "height": side * 2 + 2, "count": 3, "bands": [1, 2, 3], "dtype": "uint8",
                  "stretch": {"kind": "none"}, "gsd": None}
        raster_id = store.run(lambda conn: tables.insert_raster(conn, raster), write=True)
        gen = ClusteredCodes(bits=bits, centres=max(1, n // 50), seed=0)
        rng = np.random.default_rng(0)
        for start in range(0, n, 5000):
            cells = range(start, min(n, start + 5000))
            metas = []
            for i in cells:
                col, row = i % side, i // side
                lon0, lat1 = 10.0 + col * step / 2, 50.0 - row * step / 2
                ring = [[lon0, lat1 - step], [lon0 + step, lat1 - step], [lon0 + step, lat1], [lon0, lat1],
                        [lon0, lat1 - step]]
                metas.append({"window": (col * 2, row * 2, 4, 4), "bounds": (lon0, lat1 - step, lon0 + step, lat1),
                              "footprint": ring, "centroid": (lon0 + step / 2, lat1 - step / 2),
                              "bbox": (lon0, lat1 - step, lon0 + step, lat1), "valid_fraction": 1.0})
            codes = gen.sample(len(metas))
            desc = rng.integers(-127, 128, (len(metas), dims), dtype=np.int8)
            items = [NewImage(f"/synthetic/grid.tif#{m['window'][0]},{m['window'][1]},4,4", None, 4, 4, "0" * 64,
                              "now", c.tobytes(), d.tobytes()) for m, c, d in zip(metas, codes, desc)]
            store.add(items, on_insert=lambda conn, ids, metas=metas: tables.insert_chips(conn, raster_id, zip(ids, metas)))
        index._live.update_now()
        total = len(index)
        chips = sorted(index.geo.chips(range(1, real + 1)).items())
    return {"rows": total, "real_chips": real, "synthetic_rows": total - real, "seconds": round(time.perf_counter() - started, 1),
            "real_chip_report": report.summary(), "chips": chips, "index_dir": index_dir}


def _rss_kb(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def _measure(client: httpx.Client, pid: int, method: str, path: str, **kwargs) -> tuple[int, float, float]:
    """``(status, seconds, peak RSS increase MB)`` of one request; the peak is reset just before it."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = _rss_kb(pid)["VmRSS"]
    started = time.perf_counter()
    r = client.request(method, path, **kwargs)
    seconds = time.perf_counter() - started
    peak = _rss_kb(pid)["VmHWM"]
    return r.status_code, seconds, max(0, peak - before) / 1024


def _png(size: int = 96) -> bytes:
    rng = np.random.default_rng(1)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def requests_list(built: dict) -> list[tuple[str, str, str, dict, int]]:
    """``(name, method, path, httpx kwargs, expected status)`` of every adversarial request."""
    chips = built["chips"]
    first_id, first = chips[0]
    second_id = chips[1][0]
    lon, lat = first["lon"], first["lat"]
    d = 0.0003
    small_box = f"{lon - d},{lat - d},{lon + d},{lat + d}"
    many = f"{lon - 0.6},{lat - 0.6},{lon + 0.6},{lat + 0.6}"  # dozens of the first raster's chips (300 m Landsat)
    world = "-180,-90,180,90"
    geo = "/api/geo/search"
    return [
        ("healthz", "GET", "/healthz", {}, 200),
        ("stats", "GET", "/api/stats", {}, 200),
        ("point k=20", "GET", geo, {"params": {"lon": lon, "lat": lat, "k": 20}}, 200),
        ("point k=1000 (widening bounded)", "GET", geo, {"params": {"lon": lon, "lat": lat, "k": 1000}}, 200),
        ("point k=10^6 (over the limit)", "GET", geo, {"params": {"lon": lon, "lat": lat, "k": 1_000_000}}, 422),
        ("point radius = code length", "GET", geo, {"params": {"lon": lon, "lat": lat, "radius": 64, "k": 50}}, 200),
        ("point, no chip there", "GET", geo, {"params": {"lon": -150.0, "lat": -60.0}}, 404),
        ("point near the antimeridian", "GET", geo, {"params": {"lon": -179.99, "lat": 0.0}}, 404),
        ("small box", "GET", geo, {"params": {"box": small_box, "k": 20}}, 200),
        ("box over far more than 16 chips", "GET", geo, {"params": {"box": many, "k": 20}}, 422),
        ("malformed box", "GET", geo, {"params": {"box": "1,2,3"}}, 422),
        ("two examples by id", "GET", geo, {"params": [("id", first_id), ("id", second_id), ("k", 20)]}, 200),
        ("ids repeated 5000 times", "GET", geo, {"params": [("id", first_id)] * 5000}, 422),
        ("whole-world AOI", "GET", geo, {"params": {"lon": lon, "lat": lat, "aoi": world, "k": 20}}, 200),
        ("search by id, radius = code length", "GET", "/api/search", {"params": {"id": first_id, "radius": 64}}, 200),
        ("search by id, k=10^6", "GET", "/api/search", {"params": {"id": first_id, "k": 1_000_000}}, 422),
        ("upload search", "POST", "/api/search", {"files": {"image": ("q.png", _png(), "image/png")}}, 200),
        ("upload geo search", "POST", geo, {"files": {"image": ("q.png", _png(), "image/png")}}, 200),
        ("chip thumbnail", "GET", f"/api/geo/chips/{first_id}/thumbnail", {}, 200),
        ("thumbnail of an id that is no chip", "GET", "/api/geo/chips/999999999/thumbnail", {}, 404),
        ("rasters", "GET", "/api/geo/rasters", {}, 200),
    ]


def bounded_requests(work: Path, model: Path, rasters: Path, rows: int) -> dict:
    built = build_index(work, model, rasters, rows)
    server = Server(built["index_dir"], model, workers=1)
    pid = server.proc.pid
    results, overlays = [], []
    try:
        idle = _rss_kb(pid)["VmRSS"] / 1024
        with httpx.Client(base_url=server.url, timeout=60) as client:
            raster_ids = [r["id"] for r in client.get("/api/geo/rasters").json()["rasters"]
                          if r["name"] != "grid.tif"]  # the synthetic rows have no file to read
            for rid in raster_ids:  # the first request per raster: open, hash, read and warp
                runs = [_measure(client, pid, "GET", f"/api/geo/rasters/{rid}/overlay.png") for _ in range(2)]
                overlays.append({"raster_id": rid, "status": runs[0][0], "first_seconds": round(runs[0][1], 3),
                                 "first_rss_increase_mb": round(runs[0][2], 1), "warm_seconds": round(runs[1][1], 3),
                                 "warm_rss_increase_mb": round(runs[1][2], 1)})
            for name, method, path, kwargs, expected in requests_list(built):
                runs = [_measure(client, pid, method, path, **kwargs) for _ in range(2)]
                results.append({"request": name, "method": method, "path": path, "expected_status": expected,
                                "status": runs[1][0], "cold_status": runs[0][0],
                                "cold_seconds": round(runs[0][1], 4), "seconds": round(runs[1][1], 4),
                                "cold_rss_increase_mb": round(runs[0][2], 1), "rss_increase_mb": round(runs[1][2], 1)})
    finally:
        server.stop()
    built.pop("chips")
    built["index_dir"] = "WORK/index"
    return {"index": built, "server_idle_rss_mb": round(idle, 1), "requests": results, "overlays_first_per_raster": overlays,
            "server": "rshash serve --workers 1 (uvicorn) on loopback; requests one at a time from this process"}


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="model directory (default: a random-head 64-bit model)")
    parser.add_argument("--rasters", type=Path, default=Path(os.environ.get("RSHASH_RASTERS", SHARED_RASTERS)))
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="10^4 rows")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    rows = 10_000 if args.quick else args.rows
    with tempfile.TemporaryDirectory(prefix="rshash-geo-robustness-") as tmp:
        work = Path(tmp)
        model = _model(work, args.model, 64)
        trained = model_is_trained(model)
        part1 = bad_rasters(work, model)
        print(f"bad rasters: {len(part1['files'])} tried, unexpected {part1['unexpected']}, stopped {part1['stopped']}",
              flush=True)
        part2 = bounded_requests(work, model, args.rasters, rows)
    reqs = part2["requests"]
    unexpected = [r["request"] for r in reqs if r["status"] != r["expected_status"]]
    targets = {
        "bad_rasters_tried": len(part1["files"]),
        "unexpected_outcomes": len(part1["unexpected"]),
        "runs_stopped": int(part1["stopped"]),
        "requests_tried": len(reqs),
        "unexpected_status_codes": len(unexpected),
        "server_errors_5xx": sum(r["status"] >= 500 or r["cold_status"] >= 500 for r in reqs)
        + sum(o["status"] >= 500 for o in part2["overlays_first_per_raster"]),
        "max_request_rss_increase_mb_1e5": max(r["rss_increase_mb"] for r in reqs),
        "max_request_seconds_1e5": max(r["seconds"] for r in reqs),
        "import_cycles": 0 if _no_import_cycle() else 1,
        "rows": part2["index"]["rows"],
    }
    met = {
        "bad_rasters_tried": targets["bad_rasters_tried"] >= LIMITS["bad_rasters_tried"],
        "unexpected_outcomes": targets["unexpected_outcomes"] == 0,
        "runs_stopped": targets["runs_stopped"] == 0,
        "unexpected_status_codes": targets["unexpected_status_codes"] == 0,
        "server_errors_5xx": targets["server_errors_5xx"] == 0,
        "max_request_rss_increase_mb_1e5": targets["max_request_rss_increase_mb_1e5"] <= LIMITS["max_request_rss_increase_mb_1e5"],
        "max_request_seconds_1e5": targets["max_request_seconds_1e5"] <= LIMITS["max_request_seconds_1e5"],
        "import_cycles": targets["import_cycles"] == 0,
    }
    out = {
        "benchmark": "geo_robustness",
        "command": "python benchmarks/geo_robustness.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
                    "load_average_at_end": [round(v, 2) for v in os.getloadavg()]},
        "model": describe_model(model, trained), "model_is_trained": trained,
        "data": {"bad_rasters": "written by tests/rasters_awkward.py", "real_chips": "shared rasters "
                 "(../shared/data/rasters/*.tif) at native resolution, 64 px, 50 % overlap",
                 "synthetic_rows": "clustered 64-bit codes (rshash.index.synthetic), random int8 descriptors, "
                 "4x4 px chips on a lon/lat grid at 10 E 50 N"},
        "targets": targets, "limits": LIMITS, "met": met, "unexpected_status_requests": unexpected,
        "bad_rasters": part1, "bounded_requests": part2,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    write_section("geo_robustness", markdown(out))
    print(json.dumps({"targets": targets, "met": met}, indent=1))
    return 0


def markdown(out: dict) -> str:
    t, m = out["targets"], out["met"]
    lines = ["## Geo robustness: awkward rasters and bounded requests", "",
             f"`{out['command']}` ({out['date']}, {out['model']}, {t['rows']} rows).", "",
             "| target | measured | limit | met |", "|---|---|---|---|"]
    for key in m:
        lines.append(f"| {key} | {t[key]} | {out['limits'].get(key, '0' if key != 'bad_rasters_tried' else '>= 10')} "
                     f"| {'yes' if m[key] else 'NO'} |")
    lines += ["", "| request | status (expected) | warm s | cold s | peak RSS increase MB |", "|---|---|---|---|---|"]
    for r in out["bounded_requests"]["requests"]:
        lines.append(f"| {r['request']} | {r['status']} ({r['expected_status']}) | {r['seconds']} | {r['cold_seconds']} "
                     f"| {r['rss_increase_mb']} |")
    return "\n".join(lines)


def _no_import_cycle() -> bool:
    """The import-cycle test (static graph: top level, function-level and type-checking imports)."""
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          str(ROOT / "tests" / "test_model_dir.py"), "-k", "import_cycle"], capture_output=True, cwd=ROOT)
    return run.returncode == 0


if __name__ == "__main__":
    sys.exit(main())
