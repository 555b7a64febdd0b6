"""Raster ingestion and geo search: speed, memory, same place at another date, map click latency.

    python benchmarks/raster_ingest.py --model runs/ucmd/model [--rasters ../shared/data/rasters]
        [--out benchmarks/results/raster_ingest.json] [--max-chips 3000] [--quick]

1. **Rate**: chips/s indexing the aerial COG (``cogeo.tif``, defaults: 256 px at the model's 0.3 m, overlap 0.5)
   end to end, and images/s indexing a folder of the same number of 256 px PNG chips, same model, same run;
   ``raster_vs_folder_rate_ratio`` = chips/s / images/s (target >= 0.9: ingestion bound by encoding).
2. **Memory**: a synthetic 20 000 x 20 000 3-band uint8 COG-like GeoTIFF (tiled 512, deflate, overviews),
   indexed in a child process; its peak RSS (``ru_maxrss``). With ``--max-chips N`` only the first N chips are
   indexed (the reads are streamed window by window either way; the result states it).
3. **Same place, other date**: the 2009 NAIP chips (5 m, native, 64 px, no overlap) indexed; each 2020 chip
   queries them; recall@1 / @10 of the 2009 chip with the same footprint; against cosine kNN on pretrained
   ImageNet EfficientNet-Lite0 head features of the same chips.
4. **Map click latency**: a 10 000-chip index (synthetic codes and footprints on a grid: the search path is
   what is timed), ``GET /api/geo/search?lon=..&lat=..&k=20`` through the app in process, median of 200.

``--quick`` shrinks everything (seconds; a check that the script runs, not a measurement).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

os.environ.setdefault("RSHASH_PROGRESS", "0")

from rshash.geo import footprints, tables  # noqa: E402
from rshash.geo.source import open_raster  # noqa: E402
from rshash.index import Index  # noqa: E402
from rshash.index.store import NewImage  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from results_doc import write_section  # noqa: E402

COGEO = "cogeo.tif"
NAIP_2009 = "naip_m_4709963_se_14_1_20090818.tif"
NAIP_2020 = "naip_m_4709963_se_14_1_20200831.tif"


# --------------------------------------------------------------------------- 1. rate


def rate(model: Path, rasters: Path, work: Path, max_chips: int | None) -> dict:
    index_dir = work / "rate-raster"
    with Index.create(index_dir, model) as index:
        index.encoder  # noqa: B018 (load before timing)
        started = time.perf_counter()
        report = index.add_rasters(rasters / COGEO, progress=False, max_chips=max_chips)
        raster_s = time.perf_counter() - started
        chips = report.added
        # the same chips as a folder of 256 px PNG files (the UCMD layout)
        folder = work / "chips" / "chip"
        folder.mkdir(parents=True)
        from PIL import Image

        with open_raster(rasters / COGEO, out_size=256) as src:
            n = 0
            for batch in src.iter_chips(32):
                for c in batch:
                    if n < chips:
                        Image.fromarray(c.pixels).save(folder / f"{n:05d}.png")
                    n += 1
    with Index.create(work / "rate-folder", model) as index:
        index.encoder  # noqa: B018
        started = time.perf_counter()
        folder_report = index.add_paths(folder.parent, progress=False)
        folder_s = time.perf_counter() - started
    raster_rate, folder_rate = chips / raster_s, folder_report.added / folder_s
    return {"raster": COGEO, "chips": chips, "raster_seconds": round(raster_s, 3), "chips_per_s": round(raster_rate, 3),
            "folder_images": folder_report.added, "folder_seconds": round(folder_s, 3),
            "folder_images_per_s": round(folder_rate, 3), "ratio": round(raster_rate / folder_rate, 4),
            "options": "defaults: tile 256 at gsd auto (0.3 m), overlap 0.5, batch 32",
            "limited_to": max_chips}


# --------------------------------------------------------------------------- 2. memory


def synthetic_cog(path: Path, size: int, overviews: bool) -> Path:
    """A huge but compressible 3-band uint8 GeoTIFF: smooth fields plus a faint periodic texture."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.transform import from_origin

    profile = dict(driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs="EPSG:32633",
                   transform=from_origin(500000, 5000000, 0.3, 0.3), tiled=True, blockxsize=512, blockysize=512,
                   compress="deflate", BIGTIFF="IF_SAFER")
    xs = np.arange(size, dtype=np.float32)
    with rasterio.open(path, "w", **profile) as ds:
        for row in range(0, size, 512):
            h = min(512, size - row)
            y = np.arange(row, row + h, dtype=np.float32)[:, None]
            base = 128 + 60 * np.sin(xs[None, :] / 700.0) * np.cos(y / 900.0)
            texture = 20 * np.sin(xs[None, :] / 9.0) * np.sin(y / 13.0)
            block = np.stack([base + texture, base - texture, 255 - base]).clip(0, 255).astype(np.uint8)
            ds.write(block, window=rasterio.windows.Window(0, row, size, h))
        if overviews:
            ds.build_overviews([4, 16, 64], Resampling.average)
    return path


CHILD = """
import json, resource, sys, time
from rshash.index import Index
index = Index.create(sys.argv[1], sys.argv[2])
index.encoder
t = time.perf_counter()
report = index.add_rasters(sys.argv[3], progress=False, max_chips=int(sys.argv[4]) if sys.argv[4] != "none" else None)
seconds = time.perf_counter() - t
print(json.dumps({"chips": report.added, "limited": report.limited, "seconds": seconds,
                  "planned": report.rasters[0]["chips_planned"] if report.rasters else None,
                  "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def memory(model: Path, work: Path, size: int, max_chips: int | None, overviews: bool) -> dict:
    started = time.perf_counter()
    raster = synthetic_cog(work / f"synthetic-{size}.tif", size, overviews)
    write_s = time.perf_counter() - started
    env = os.environ | {"PYTHONPATH": str(ROOT / "src"), "RSHASH_PROGRESS": "0"}
    out = subprocess.run([sys.executable, "-c", CHILD, str(work / "mem-index"), str(model), str(raster),
                          str(max_chips) if max_chips else "none"], env=env, capture_output=True, text=True, check=True)
    child = json.loads(out.stdout.strip().splitlines()[-1])
    return {"size_px": size, "file_mb": round(raster.stat().st_size / 2**20, 1), "write_seconds": round(write_s, 1),
            "chips_planned": child["planned"], "chips_indexed": child["chips"], "partial": child["limited"],
            "chips_per_s": round(child["chips"] / child["seconds"], 3),
            "peak_rss_gb": round(child["peak_rss_kb"] / 2**20, 3),
            "note": ("only the first --max-chips chips were indexed (reads are streamed window by window, so memory "
                     "does not depend on how many)") if child["limited"] else "the whole raster was indexed"}


# --------------------------------------------------------------------------- 3. same place, other date


SAME_PLACE = dict(gsd="native", tile=64, overlap=0.0, max_nodata=0.5)


def _chips(path: Path, size: int) -> list:
    with open_raster(path, out_size=size, **{k: v for k, v in SAME_PLACE.items()}) as src:
        return [c for batch in src.iter_chips(64) for c in batch]


def _truth(queries: list, database: list) -> list[int | None]:
    """For each 2020 chip, the index in ``database`` of the 2009 chip with the same footprint (IoU > 0.9)."""
    polys = [footprints.to_polygon(c.meta.footprint) for c in database]
    out = []
    for q in queries:
        qp = footprints.to_polygon(q.meta.footprint)
        ious = [footprints.overlap(qp, p, "iou") for p in polys]
        best = int(np.argmax(ious))
        out.append(best if ious[best] > 0.9 else None)
    return out


def _recall(ranked: list[list[int]], truth: list[int | None], k: int) -> float:
    pairs = [(r, t) for r, t in zip(ranked, truth) if t is not None]
    return sum(t in r[:k] for r, t in pairs) / len(pairs)


def same_place(model: Path, rasters: Path, work: Path, limit: int | None) -> dict:
    with Index.create(work / "same-place", model) as index:
        size = index.encoder.input_size
        report = index.add_rasters(rasters / NAIP_2009, progress=False, **SAME_PLACE)
        database = _chips(rasters / NAIP_2009, size)
        queries = _chips(rasters / NAIP_2020, size)[:limit]
        truth = _truth(queries, database)
        # item id -> database position, by window
        with_ids = index.geo.chips(range(1, len(index) + 1))
        by_window = {tuple(c["window"]): i for i, c in with_ids.items()}
        pos_of = {by_window[tuple(c.meta.window)]: j for j, c in enumerate(database)}
        ranked = []
        for q in queries:
            hits = index.search(q.pixels, k=10)
            ranked.append([pos_of[h.id] for h in hits])
    from rshash.baselines.knn import cosine_distances
    from rshash.features import pretrained_embeddings

    feats_db = pretrained_embeddings(np.stack([c.pixels for c in database]))
    feats_q = pretrained_embeddings(np.stack([q.pixels for q in queries]))

    knn = np.argsort(cosine_distances(feats_q, feats_db), axis=1, kind="stable")[:, :10].tolist()
    return {"database": NAIP_2009, "queries": NAIP_2020, "options": SAME_PLACE, "database_chips": report.added,
            "query_chips": len(queries), "queries_with_a_match": sum(t is not None for t in truth),
            "chance_recall_at_10": round(10 / len(database), 4),
            "rshash": {"recall_at_1": round(_recall(ranked, truth, 1), 4), "recall_at_10": round(_recall(ranked, truth, 10), 4),
                       "search": "two-stage (Hamming shortlist, descriptor re-rank), query encoded from the 2020 pixels"},
            "knn_pretrained": {"recall_at_1": round(_recall(knn, truth, 1), 4), "recall_at_10": round(_recall(knn, truth, 10), 4),
                               "features": "ImageNet EfficientNet-Lite0 head, average-pooled, cosine"}}


# --------------------------------------------------------------------------- 4. map click latency


def click_latency(model: Path, work: Path, n_chips: int, clicks: int) -> dict:
    from fastapi.testclient import TestClient

    from rshash.service.app import create_app

    rng = np.random.default_rng(0)
    side = int(np.ceil(np.sqrt(n_chips)))
    step = 0.001  # degrees; chips overlap by half like the default tiling
    index = Index.create(work / "click-index", model)
    bits, dims = index.bits, index.descriptor_dims
    store = index._store  # synthetic rows through the same transaction path as raster ingestion
    store.run(tables.create_tables, write=True)
    raster = {"path": "/synthetic/grid.tif", "sha256": "0" * 64, "crs": "EPSG:4326",
              "transform": [step / 2, 0, 10.0, 0, -step / 2, 50.0], "width": side * 2 + 2, "height": side * 2 + 2,
              "count": 3, "bands": [1, 2, 3], "dtype": "uint8", "stretch": {"kind": "none"}, "gsd": None}
    raster_id = store.run(lambda conn: tables.insert_raster(conn, raster), write=True)
    for start in range(0, n_chips, 1000):
        cells = range(start, min(n_chips, start + 1000))
        metas = []
        for i in cells:
            col, row = (i % side), (i // side)
            lon0, lat1 = 10.0 + col * step / 2, 50.0 - row * step / 2
            ring = [[lon0, lat1 - step], [lon0 + step, lat1 - step], [lon0 + step, lat1], [lon0, lat1], [lon0, lat1 - step]]
            metas.append({"window": (col * 2, row * 2, 4, 4), "bounds": (lon0, lat1 - step, lon0 + step, lat1),
                          "footprint": ring, "centroid": (lon0 + step / 2, lat1 - step / 2),
                          "bbox": (lon0, lat1 - step, lon0 + step, lat1), "valid_fraction": 1.0})
        codes = np.packbits(rng.random((len(metas), bits)) < 0.5, axis=1)
        desc = rng.integers(-127, 128, (len(metas), dims), dtype=np.int8)
        rows = [NewImage(f"/synthetic/grid.tif#{m['window'][0]},{m['window'][1]},4,4", None, 4, 4, "0" * 64, "now",
                         c.tobytes(), d.tobytes()) for m, c, d in zip(metas, codes, desc)]
        store.add(rows, on_insert=lambda conn, ids, metas=metas: tables.insert_chips(conn, raster_id, zip(ids, metas)))
    index._live.update_now()
    times, direct = [], []
    with TestClient(create_app(index=index), base_url="http://127.0.0.1:8000") as client:
        for i in range(clicks + 5):
            lon = 10.0 + rng.uniform(0.2, 0.8) * side * step / 2
            lat = 50.0 - rng.uniform(0.2, 0.8) * side * step / 2
            t = time.perf_counter()
            r = client.get("/api/geo/search", params={"lon": lon, "lat": lat, "k": 20})
            elapsed = (time.perf_counter() - t) * 1000
            assert r.status_code == 200 and r.json()["count"] == 20, r.text
            if i >= 5:  # warm-up
                times.append(elapsed)
            t = time.perf_counter()
            index.search_point(lon, lat, k=20)
            direct.append((time.perf_counter() - t) * 1000)
    index.close()
    return {"chips": n_chips, "clicks": clicks, "k": 20, "median_ms": round(statistics.median(times), 3),
            "p90_ms": round(float(np.percentile(times, 90)), 3), "index_search_point_median_ms": round(statistics.median(direct), 3),
            "path": "GET /api/geo/search?lon&lat&k=20 through the FastAPI app in process (TestClient): chip lookup in "
                    "the R*Tree, shortlist, re-rank, own-place and overlap suppression, JSON"}


# --------------------------------------------------------------------------- report


def markdown(r: dict) -> str:
    """The docs/RESULTS.md section: the targets beside the goals, and what each number measured."""
    t, ok = r["targets"], r["targets_met"]
    rate, mem, same, click = r["rate"], r["memory"], r["same_place"], r["click"]
    yes = lambda key: "yes" if ok[key] else "NO"  # noqa: E731
    return "\n".join([
        "## Rasters: ingestion, memory, same place at another date, map click", "",
        f"Command: `{r['command']}` (model `{r['model']}`, fingerprint {r['model_fingerprint']}); {r['seconds']:.0f} s.", "",
        "| target | goal | measured | met |", "|---|---|---|---|",
        f"| raster chips/s ÷ folder images/s ({rate['raster']}, {rate['chips']} chips; {rate['options']}) | >= 0.9 | "
        f"{t['raster_vs_folder_rate_ratio']:.3f} ({rate['chips_per_s']:.1f} vs {rate['folder_images_per_s']:.1f}) | "
        f"{yes('raster_vs_folder_rate_ratio >= 0.9')} |",
        f"| peak RSS, synthetic {mem['size_px']} px raster ({mem['chips_indexed']} of {mem['chips_planned']} chips"
        f"{', partial' if mem['partial'] else ''}) | <= 2 GB | {t['peak_rss_gb_20000px']:.2f} GB | {yes('peak_rss_gb_20000px <= 2')} |",
        f"| same place, other date: recall@10 ({same['query_chips']} 2020 chips query {same['database_chips']} 2009 chips, "
        f"5 m native, 64 px) | >= pretrained kNN {t['same_place_recall_at_10_knn_pretrained']:.4f} | "
        f"{t['same_place_recall_at_10']:.4f} (recall@1 {same['rshash']['recall_at_1']:.4f}; chance@10 "
        f"{same['chance_recall_at_10']:.4f}) | {yes('same_place_recall_at_10 >= knn_pretrained')} |",
        f"| map click-search, {click['chips']}-chip index, median of {click['clicks']} | < 300 ms | "
        f"{t['map_click_search_ms']:.1f} ms (p90 {click['p90_ms']:.1f}) | {yes('map_click_search_ms < 300')} |",
        "", f"Memory: {mem['note']}.", f"Click path: {click['path']}.",
    ])


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, type=Path, help="trained model directory")
    parser.add_argument("--rasters", type=Path, default=ROOT.parent / "shared/data/rasters")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/raster_ingest.json")
    parser.add_argument("--max-chips", type=int, default=3000, help="chips indexed from the 20 000 px raster (0: all)")
    parser.add_argument("--size", type=int, default=20000, help="side of the synthetic raster, pixels")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that the script runs (seconds)")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one, removed)")
    args = parser.parse_args(argv)
    quick = args.quick
    work = Path(tempfile.mkdtemp(prefix="rshash-raster-bench-")) if args.work is None else args.work
    work.mkdir(parents=True, exist_ok=True)
    try:
        started = time.perf_counter()
        results = {
            "benchmark": "raster_ingest", "quick": quick,
            "command": "python benchmarks/raster_ingest.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "model": str(args.model), "model_fingerprint": json.loads((args.model / "config.json").read_text())["fingerprint"],
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
            "rate": rate(args.model, args.rasters, work, 16 if quick else None),
            "memory": memory(args.model, work, 2048 if quick else args.size, 8 if quick else (args.max_chips or None),
                             overviews=not quick),
            "same_place": same_place(args.model, args.rasters, work, 12 if quick else None),
            "click": click_latency(args.model, work, 500 if quick else 10_000, 10 if quick else 200),
        }
        results["seconds"] = round(time.perf_counter() - started, 1)
        results["targets"] = {
            "raster_vs_folder_rate_ratio": results["rate"]["ratio"],
            "peak_rss_gb_20000px": results["memory"]["peak_rss_gb"],
            "same_place_recall_at_10": results["same_place"]["rshash"]["recall_at_10"],
            "same_place_recall_at_10_knn_pretrained": results["same_place"]["knn_pretrained"]["recall_at_10"],
            "map_click_search_ms": results["click"]["median_ms"],
        }
        results["targets_met"] = {
            "raster_vs_folder_rate_ratio >= 0.9": results["targets"]["raster_vs_folder_rate_ratio"] >= 0.9,
            "peak_rss_gb_20000px <= 2": results["targets"]["peak_rss_gb_20000px"] <= 2,
            "same_place_recall_at_10 >= knn_pretrained": results["targets"]["same_place_recall_at_10"]
            >= results["targets"]["same_place_recall_at_10_knn_pretrained"],
            "map_click_search_ms < 300": results["targets"]["map_click_search_ms"] < 300,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
        if not quick:
            write_section("raster_ingest", markdown(results))
        print(json.dumps(results["targets"] | {"met": results["targets_met"]}, indent=1))
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
