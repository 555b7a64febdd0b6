"""``rshash run``: the main job end to end on embedded defaults (files + SQLite, no server).

UCMD: train (skipped when the model directory exists) -> index the dataset -> a few example searches ->
evaluation report. Rasters (when the shared acquisitions are there): a self-supervised model trained on the
acquisitions of two places (NAIP 2009/2020, Landsat 1985/2000/2020; no labels) -> a raster index of their chips
-> example searches from a place, written as GeoJSON -> the command that opens the map. Everything lands under
``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from ..data.datasets import load_records, resolve_data_dir
from ..data.splits import load_split
from ..model_config import ModelDirError, read_config

log = logging.getLogger("rshash.run")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="train, index, search and evaluate end to end (the README's main command)")
    p.add_argument("--data", help="dataset (default: $RSHASH_DATA, else ../shared/data/UCMerced_LandUse)")
    p.add_argument("--out", default="runs/ucmd", help="folder for model/, index/, examples.json, report/")
    p.add_argument("--bits", type=int, default=None, help="code length of the UCMD model (default: the recipe's, 128)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--retrain", action="store_true", help="train again even if OUT/model exists")
    p.add_argument("--examples", type=int, default=3, help="example queries to run and print")
    p.add_argument("--rasters", type=Path, help="folder of the demo rasters (default: $RSHASH_RASTERS, else "
                   "../shared/data/rasters when present)")
    p.add_argument("--no-rasters", action="store_true", help="skip the raster part")
    p.set_defaults(func=run)


def _train_if_needed(args: argparse.Namespace, data_dir: Path, model_dir: Path) -> None:
    if model_dir.joinpath("config.json").is_file() and not args.retrain:
        try:
            read_config(model_dir)
            log.info("using the existing model in %s (--retrain to train again)", model_dir)
            return
        except ModelDirError as exc:
            log.warning("training again: %s", exc)
    from ..training.finetune import FinetuneConfig
    from ..training.hashing import default_recipe
    from ..training.pipeline import TrainOptions, train

    from ..data.sources import folder_source

    records = load_records(data_dir)
    options = TrainOptions(seed=args.seed, finetune_config=FinetuneConfig(seed=args.seed),
                           hash_config=default_recipe(args.bits, args.seed),
                           sources=[folder_source(data_dir, records)])
    metrics = train(records, model_dir, options)
    log.info("trained: %s", json.dumps(metrics.get("test_retrieval", {})))


def _drop_index_of_another_model(index_dir: Path, model_dir: Path) -> None:
    """The main job's index is derived from its data: after a retrain that changed the encoder, rebuild it."""
    import shutil

    from ..index import Index, IndexFormatError, ModelMismatchError

    if not (index_dir / "meta.sqlite").is_file():
        return
    try:
        Index.open(index_dir, model_dir).close()
    except (ModelMismatchError, IndexFormatError) as exc:
        log.warning("rebuilding %s with %s: %s", index_dir, model_dir, exc)
        shutil.rmtree(index_dir)


def _example_searches(index, model_dir: Path, n: int) -> list[dict]:
    """Search with the first ``n`` test images (by indexed id) and print their top 5."""
    split = load_split(model_dir / "split.json")
    tests = [p for p, s in sorted(split.items()) if s == "test"][:: max(1, len(split) // (5 * max(n, 1)))][:n]
    examples = []
    for path in tests:
        hits = index.search(path, k=10)
        examples.append({"query": path, "results": [h.__dict__ for h in hits]})
        print(f"\nquery {path}")
        for h in hits[:5]:
            sim = "-" if h.similarity is None else f"{h.similarity:.3f}"
            print(f"  {h.rank:2d}  d={h.distance:2d}  sim={sim}  {h.label or '-':>18}  {h.path}")
    return examples


#: The raster demo: acquisitions of one place at several dates each (the self-supervised model learns from them).
DEMO_RASTERS = ("naip_m_4709963_se_14_1_20090818.tif", "naip_m_4709963_se_14_1_20200831.tif",
                "landsat_ucayali_1985.tif", "landsat_ucayali_2000.tif", "landsat_ucayali_2020.tif")


def _demo_rasters(args: argparse.Namespace) -> list[Path]:
    import os

    if args.no_rasters:
        return []
    folder = args.rasters or Path(os.environ.get("RSHASH_RASTERS", Path.cwd().parent / "shared" / "data" / "rasters"))
    files = [folder / name for name in DEMO_RASTERS if (folder / name).is_file()]
    if len(files) < 2:
        log.info("raster part skipped: the demo rasters are not in %s (--rasters DIR)", folder)
        return []
    return files


#: The acquisitions searched from (their centre): the first of each demo place.
DEMO_QUERIES = (DEMO_RASTERS[0], DEMO_RASTERS[2])


def _raster_part(args: argparse.Namespace, files: list[Path], out: Path,
                 queries: tuple[str, ...] = DEMO_QUERIES) -> dict:
    """Self-supervised model on the rasters -> index of their 64 px chips -> a search from the centre of each
    raster named in ``queries``."""
    from ..geo.footprints import write_geojson
    from ..geo.source import open_raster
    from ..index import Index
    from ..model_config import has_model
    from ..training.selfsup import SelfSupConfig, train_selfsup

    model_dir, index_dir = out / "model", out / "index"
    if args.retrain or not has_model(model_dir):
        metrics = train_selfsup(files, model_dir, SelfSupConfig(seed=args.seed))
        log.info("self-supervised model: %d chips, %d time pairs, %.0f s", metrics["chips"], metrics["time_pairs"],
                 metrics["timings"]["total_s"])
    _drop_index_of_another_model(index_dir, model_dir)
    examples = {}
    with Index.open_or_create(index_dir, model_dir) as index:
        report = index.add_rasters(files, tile=64, gsd="native", overlap=0.0)  # the chips the model learnt from
        log.info("raster index: %s", report.summary())
        for path in (p for p in files if p.name in queries):
            with open_raster(path, gsd="native") as source:  # one query per place: its first acquisition's centre
                lon, lat = _centre(source)
            query = index.geo.point_query(lon, lat, raster=str(path))
            hits = index.geo.search(query, 10)
            geojson = out / f"search-{path.stem}.geojson"
            write_geojson(geojson, hits)
            same = index.geo.same_place(query.described["chip"])  # this place in every acquisition
            examples[path.name] = {"lonlat": [lon, lat], "geojson": str(geojson),
                                   "results": [h.to_dict() for h in hits], "same_place": same}
            print(f"\nplaces like lon {lon:.5f}, lat {lat:.5f} in {path.name} -> {geojson}")
            for h in hits[:5]:
                print(f"  {h.rank:2d}  d={h.distance:3d}  lon {h.lon:.5f} lat {h.lat:.5f}  "
                      f"{(h.datetime or '')[:10]}  {Path(h.raster).name}")
            print("  the same place in every acquisition: "
                  + ", ".join(f"{(r['datetime'] or '?')[:10]} (id {r['id']})" for r in same))
        exported = index.export_geoparquet(out / "index.parquet", progress=False)
        print(f"\nthe raster index as GeoParquet: {exported['path']} ({exported['rows']} items)")
    (out / "examples.json").write_text(json.dumps(examples, indent=1))
    print(f"\nmap of the raster index: .venv/bin/rshash serve --index {index_dir}  ->  http://127.0.0.1:8000/map")
    return examples


def _centre(source) -> tuple[float, float]:
    """lon, lat of the raster's centre pixel."""
    from rasterio.windows import Window

    meta = source.read_chip(Window(source.ds.width // 2, source.ds.height // 2, 1, 1)).meta
    return meta.centroid


def run(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_model  # heavy imports only when needed
    from ..index import Index

    data_dir = resolve_data_dir(args.data)
    out = Path(args.out)
    model_dir, index_dir = out / "model", out / "index"
    _train_if_needed(args, data_dir, model_dir)
    _drop_index_of_another_model(index_dir, model_dir)
    index = Index.open_or_create(index_dir, model_dir)
    report = index.add_paths(load_records(data_dir))
    log.info("index: %s", report.summary())
    examples = _example_searches(index, model_dir, args.examples)
    (out / "examples.json").write_text(json.dumps(examples, indent=1))
    metrics = evaluate_model(model_dir, data_dir, out / "report")
    rasters = _demo_rasters(args)
    if rasters:
        _raster_part(args, rasters, out / "rasters")
    print(f"\nreport: {out / 'report' / 'index.html'}")
    print(json.dumps({k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}, indent=1))
    return 0
