"""``rshash index``: encode an image folder, a manifest or georeferenced rasters into a searchable index, or
remove items from one."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..io_utils import atomic_write_text

if TYPE_CHECKING:  # imported lazily at run time: building the CLI should not load faiss
    from ..index import Index

#: Mirrors ``rshash.index.KINDS`` (kept literal so building the CLI does not import faiss).
KIND_CHOICES = ("flat", "multihash", "ivf")
#: Written into INDEX_DIR after each add: counts and every skipped file with its reason.
REPORT_NAME = "add_report.json"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "index",
        help="add images to an index (created if needed) or remove them",
        description="Encode images with a trained model and add them to INDEX_DIR. Rerunning skips images "
        "already indexed with the same content, so an interrupted run resumes where it stopped.",
    )
    parser.add_argument("--out", required=True, type=Path, metavar="INDEX_DIR", help="index directory")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--images", type=Path, metavar="DIR_OR_MANIFEST", help="folder of images or CSV manifest")
    action.add_argument("--rasters", type=Path, nargs="+", metavar="FILE_OR_FOLDER",
                        help="georeferenced rasters (GeoTIFF / COG; folders searched recursively), tiled into chips")
    action.add_argument("--stac", type=Path, metavar="ITEMS_OR_CATALOG.json",
                        help="rasters described by a local STAC ItemCollection, Catalog or Collection (each Item's "
                             "RGB GeoTIFF asset, its bands and date; remote hrefs skipped with the reason)")
    action.add_argument("--remove", type=int, nargs="+", metavar="ID", help="remove these image ids")
    action.add_argument("--remove-raster", metavar="ID_OR_PATH",
                        help="remove an indexed raster (by id, path or file name) with all its chips")
    parser.add_argument("--model", type=Path, metavar="MODEL_DIR", help="model directory (required for a new index)")
    parser.add_argument(
        "--kind", choices=KIND_CHOICES, help="search structure: flat (exact, default), multihash or ivf (sub-linear)"
    )
    parser.add_argument("--backend", choices=("faiss", "milvus"),
                        help="where a new index keeps its codes for search: faiss (embedded, default) or milvus")
    parser.add_argument("--uri", metavar="URI", help="with --backend milvus: a Milvus Lite file (*.db; default "
                        "INDEX_DIR/milvus.db) or a Milvus server address such as http://host:19530")
    parser.add_argument("--batch-size", type=int, default=32, help="images encoded and committed together")
    engine = parser.add_argument_group("encoding engine (images and rasters)")
    engine.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="local (this process, default) or ray (read and encode on a Ray cluster, commit here)")
    engine.add_argument("--address", metavar="auto|ray://HOST:PORT",
                        help="with --engine ray: the Ray cluster (default: $RAY_ADDRESS, else a new local Ray)")
    engine.add_argument("--workers", type=int, metavar="N",
                        help="with --engine ray: encoder actors, one ONNX Runtime session each "
                        "(default: cluster CPUs / $RSHASH_THREADS)")
    rasters = parser.add_argument_group("rasters (with --rasters)")
    rasters.add_argument("--tile", type=int, default=256,
                         help="chip size in pixels at the target ground resolution (default 256)")
    rasters.add_argument("--gsd", type=_gsd, default="auto", metavar="auto|METRES|native",
                         help="target ground resolution: auto (the resolution the model was trained at nearest the "
                         "raster's own, 0.3 m for UCMD; a raster more than 2x from it is skipped with the reason; "
                         "default), metres, or native (the raster's own pixels)")
    rasters.add_argument("--overlap", type=float, default=0.5, help="overlap of neighbouring chips, 0..<1 (default 0.5)")
    rasters.add_argument("--bands", type=_bands, metavar="R,G,B",
                         help="1-based bands read as red, green, blue (default: by colour interpretation, else 1,2,3)")
    rasters.add_argument("--max-nodata", type=float, default=0.5,
                         help="skip chips with a larger fraction of nodata pixels (default 0.5)")
    rasters.add_argument("--max-chips", type=int, metavar="N", help="stop after N new chips (a partial run; resumable)")
    rasters.add_argument("--datetime", type=_datetime, default="auto", metavar="auto|tiff|none|WHEN",
                         help="acquisition time of the rasters: auto (default: from the file name, a YYYYMMDD date "
                              "or a bare year), tiff (the TIFF date-time tag, often the processing date), none, or "
                              "one time or interval for all of them (2020-04-15, 2020, 2019-06/2019-08)")
    parser.set_defaults(func=run)


def _datetime(text: str) -> str:
    from ..geo.dates import check_datetime_option

    try:
        return check_datetime_option(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _gsd(text: str) -> str | float:
    if text in ("auto", "native"):
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto, native or metres, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"ground resolution must be > 0 metres, got {text!r}")
    return value


def _metres(value: float | None) -> str:
    return "native pixels" if value is None else f"{value:.3g} m"


def model_resolution(gsds: list[float] | None) -> str:
    """The index's model resolutions as the CLI prints them."""
    if gsds is None:
        return "not recorded"
    return ", ".join(f"{g:.3g} m" for g in gsds) if gsds else "unknown (index rasters with --gsd METRES or native)"


def _bands(text: str) -> tuple[int, ...]:
    try:
        bands = tuple(int(b) for b in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 1-based band numbers like 1,2,3, got {text!r}") from None
    if len(bands) not in (1, 3) or min(bands) < 1:
        raise argparse.ArgumentTypeError(f"give 3 bands (R,G,B) or 1 (grey), 1-based, got {text!r}")
    return bands


def run(args: argparse.Namespace) -> int:
    from ..index import Index

    if args.remove:
        with Index.open(args.out, args.model) as index:
            return _remove(index, args.remove)
    if args.remove_raster is not None:
        with Index.open(args.out, args.model) as index:
            return _remove_raster(index, args.remove_raster)
    if args.engine != "ray" and (args.address is not None or args.workers is not None):
        raise SystemExit("rshash index: --address and --workers go with --engine ray")
    if args.rasters or args.stac:
        return _add_rasters(args)
    with Index.open_or_create(args.out, args.model, args.kind, args.backend, args.uri) as index:
        report = index.add_paths(args.images, batch_size=args.batch_size, engine=args.engine, address=args.address,
                                 workers=args.workers)
        stats = index.stats()
    report_path = args.out / REPORT_NAME
    atomic_write_text(report_path, json.dumps({"images": str(args.images), **report.to_dict()}, indent=1))
    print(f"{args.images}: {report.summary()}")
    print(f"{args.out}: {stats['images']} images, {stats['bits']}-bit codes, kind {stats['kind']}")
    if report.skipped:
        print(f"unreadable files and reasons: {report_path}")
    return 0


def _add_rasters(args: argparse.Namespace) -> int:
    from ..index import Index

    options = dict(tile=args.tile, gsd=args.gsd, overlap=args.overlap, bands=args.bands, max_nodata=args.max_nodata,
                   batch_size=args.batch_size, max_chips=args.max_chips, engine=args.engine, address=args.address,
                   workers=args.workers, datetime=args.datetime)
    if args.stac is not None and not args.stac.is_file():  # before an index is created
        raise FileNotFoundError(f"no such STAC file: {args.stac}")
    with Index.open_or_create(args.out, args.model, args.kind, args.backend, args.uri) as index:
        if args.stac is not None:
            report = index.add_stac(args.stac, **options)
        else:
            report = index.add_rasters(args.rasters, **options)
        stats = index.stats()
    report_path = args.out / REPORT_NAME
    given = {"stac": str(args.stac)} if args.stac is not None else {"rasters": [str(p) for p in args.rasters]}
    atomic_write_text(report_path, json.dumps(given | report.to_dict(), indent=1))
    print(report.summary())
    for r in report.rasters:
        when = r.get("datetime")
        print(f"  {Path(r['path']).name}: {r['added']} added of {r['chips_planned']} planned"
              + (f" (STAC item {r['stac_item']})" if r.get("stac_item") else "")
              + (f", acquired {when[:10]}" + (f"..{r['datetime_end'][:10]}" if r.get("datetime_end") else "")
                 + f" ({r['datetime_source']})" if when else ", acquisition date unknown")
              + (f", tiled at {_metres(r['target_gsd'])} ({r['gsd_reason']})" if r.get("gsd_reason") else "")
              + (f", skipped {r['skipped']}" if r["skipped"] else "")
              + (f", replaced {r['replaced']['chips']} chip(s) of other tiling options" if r.get("replaced") else "")
              + (f"; PARTIAL ({r['reason']}): rerun to resume" if r.get("status") == "partial" and r.get("reason")
                 else ""))
    print(f"{args.out}: {stats['images']} items, {stats['bits']}-bit codes, kind {stats['kind']}, "
          f"model resolution {model_resolution(stats['model_gsd'])}")
    if report.skipped:
        print(f"unreadable or refused rasters and reasons: {report_path}")
    return 0


def _remove_raster(index: Index, raster: str) -> int:
    try:
        removed = index.remove_raster(int(raster) if raster.isdigit() else raster)
    except ValueError as exc:
        print(f"rshash index: {exc}", file=sys.stderr)
        return 2
    print(f"removed raster {raster} and its {removed} chip(s); {len(index)} items left in {index.path}")
    return 0


def _remove(index: Index, ids: list[int]) -> int:
    removed = index.remove(ids)
    missing = sorted(set(ids) - set(removed))
    print(f"removed {len(removed)} image(s); {len(index)} left in {index.path}")
    if missing:
        print(f"not in the index: {' '.join(map(str, missing))}", file=sys.stderr)
    return 0
