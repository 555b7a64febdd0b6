"""``rshash search``: the best images in an index for a query image or an indexed id (two-stage ranking)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from .index import model_resolution


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "search",
        help="find the images most like a query image (or indexed id): Hamming shortlist, then descriptor re-rank",
    )
    parser.add_argument("--index", required=True, type=Path, metavar="INDEX_DIR")
    parser.add_argument("query", nargs="*", type=Path, metavar="QUERY_IMAGE",
                        help="query image file (several, at most 100: positive examples searched together)")
    parser.add_argument("--id", type=int, action="append",
                        help="query by an item already in the index (itself excluded; repeatable: examples searched together)")
    parser.add_argument("--not-id", type=int, action="append", metavar="ID",
                        help="an indexed item marked 'no' (repeatable): relevance feedback with the examples as 'yes'")
    parser.add_argument("--not-image", type=Path, action="append", metavar="IMAGE",
                        help="an image marked 'no' (repeatable), as --not-id")
    place = parser.add_argument_group("places (indexes of raster chips)")
    place.add_argument("--lonlat", metavar="LON,LAT",
                       help="query by the indexed chip containing this point (longitude first; with a negative "
                       "longitude write --lonlat=-116.4,33.0, as for --box and --aoi)")
    place.add_argument("--box", metavar="LONMIN,LATMIN,LONMAX,LATMAX",
                       help="query by this box of a raster, read and encoded now")
    place.add_argument("--raster", metavar="PATH", help="with --lonlat / --box: the raster to read (path, name or id)")
    place.add_argument("--aoi", metavar="LONMIN,LATMIN,LONMAX,LATMAX", help="only results inside this area of interest")
    place.add_argument("--datetime", metavar="WHEN",
                       help="only chips of rasters acquired then: 2020, 2020-04, 2020-04-15, 2009/2012, 2015/.. "
                            "(rasters of unknown date are left out)")
    place.add_argument("--same-place", type=int, metavar="ID",
                       help="list the same place (footprint IoU >= 0.5) in every indexed acquisition, in date order")
    place.add_argument("--max-overlap", type=float, default=None,
                       help="suppress a hit overlapping a better one by more than this fraction (default 0.3)")
    place.add_argument("--geojson", type=Path, metavar="FILE", help="write the results as a GeoJSON FeatureCollection")
    place.add_argument("--csv", type=Path, metavar="FILE", help="write the results as CSV (lon, lat, then the fields)")
    place.add_argument("--stac", type=Path, metavar="FILE",
                       help="write the results as a STAC ItemCollection (each chip's asset: its raster and window)")
    place.add_argument("--find-all", action="store_true",
                       help="every place like the examples (and unlike --not-id ones) scoring at most --threshold, "
                            "as one layer of merged areas (--geojson writes the areas)")
    place.add_argument("--threshold", type=float, default=None,
                       help="with --find-all: the standardised score to keep (default: the validated "
                            "rshash.feedback.FIND_ALL_THRESHOLD; lower: fewer, surer)")
    parser.add_argument("--k", type=int, help="number of results (default 20; with --radius: no limit)")
    parser.add_argument("--radius", type=int, help="every image within this Hamming distance instead of the k nearest")
    parser.add_argument("--offset", type=int, default=0,
                        help="skip this many results (a page: offset + k at most the 1000 re-ranked ones)")
    parser.add_argument("--rerank", choices=("on", "off"), default="on",
                        help="on (default): re-rank the Hamming shortlist by the stored descriptors; off: Hamming order")
    parser.add_argument("--label", action="append", metavar="LABEL",
                        help="only images with this label (repeatable; '(unlabelled)' for images without one)")
    parser.add_argument("--model", type=Path, metavar="MODEL_DIR", help="model directory if the recorded one moved")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run)


def _is_geo(args: argparse.Namespace) -> bool:
    return args.find_all or any(v is not None for v in (args.lonlat, args.box, args.aoi, args.geojson, args.csv,
                                                        args.max_overlap, args.datetime, args.stac))


def run(args: argparse.Namespace) -> int:
    from ..index import Index

    kinds = sum(x is not None for x in (args.lonlat, args.box, args.same_place)) + bool(args.query or args.id)
    if kinds != 1:
        raise ValueError("give one query: QUERY_IMAGE..., --id N (repeatable), --lonlat LON,LAT, --box ... "
                         "or --same-place ID")
    if args.same_place is not None:
        return _run_same_place(args)
    if args.k is not None and args.k < 1:
        raise ValueError(f"--k must be >= 1, got {args.k}")
    if args.raster is not None and args.lonlat is None and args.box is None:
        raise ValueError("--raster goes with --lonlat or --box")
    if args.threshold is not None and not args.find_all:
        raise ValueError("--threshold goes with --find-all")
    if _is_geo(args):
        return _run_geo(args)
    examples = list(args.id or []) + list(args.query)
    negatives = _negatives(args)
    query = examples[0] if len(examples) == 1 else examples
    labels = None if args.label is None else [None if x == "(unlabelled)" else x for x in args.label]
    k = args.k if args.radius is not None else (args.k or 20)
    with Index.open(args.index, args.model) as index:
        options = {"radius": args.radius, "rerank": args.rerank == "on", "labels": labels, "offset": args.offset}
        if negatives:
            hits = index.search_examples(examples, negatives, k, **options)
        else:
            hits = index.search(query, k, **options)
        model_gsd = index.model_gsds
    if args.json:
        described = {"id": args.id[0] if len(args.id) == 1 else args.id} if args.id else {}
        if args.query:
            described["image"] = str(args.query[0]) if len(args.query) == 1 else [str(q) for q in args.query]
        described |= _described_negatives(args)
        out = {"index": str(args.index), "model_gsd": model_gsd, "query": described, "k": args.k,
               "radius": args.radius, "rerank": args.rerank == "on", "labels": args.label}
        print(json.dumps(out | {"results": [asdict(h) for h in hits]}, indent=1))
    else:
        print(_table(hits))
    return 0


def _negatives(args: argparse.Namespace) -> list:
    """The examples marked 'no' (ids, then image paths as strings)."""
    negatives = list(args.not_id or []) + [str(p) for p in args.not_image or []]
    if negatives and (args.lonlat is not None or args.box is not None):
        raise ValueError("--not-id / --not-image go with --id or QUERY_IMAGE examples")
    return negatives


def _described_negatives(args: argparse.Namespace) -> dict:
    return ({"not_ids": list(args.not_id)} if args.not_id else {}) | (
        {"not_images": [str(p) for p in args.not_image]} if args.not_image else {})


def _run_geo(args: argparse.Namespace) -> int:
    """Places: a point, a box, ids or images; GeoJSON / CSV export."""
    from ..geo import footprints
    from ..geo.catalog import parse_box, parse_lonlat
    from ..geo.search import MAX_OVERLAP
    from ..index import Index

    labels = None if args.label is None else [None if x == "(unlabelled)" else x for x in args.label]
    k = args.k if args.radius is not None else (args.k or 20)
    options = {"radius": args.radius, "rerank": args.rerank == "on", "labels": labels,
               "aoi": None if args.aoi is None else parse_box(args.aoi),
               "max_overlap": MAX_OVERLAP if args.max_overlap is None else args.max_overlap, "offset": args.offset,
               "datetime": args.datetime}
    with Index.open(args.index, args.model) as index:
        if args.lonlat is not None:
            query = index.geo.point_query(*parse_lonlat(args.lonlat), raster=args.raster)
        elif args.box is not None:
            query = index.geo.box_query(parse_box(args.box), raster=args.raster)
        else:
            query = index.geo.examples_query(list(args.id or []) + [str(q) for q in args.query])
        negatives = _negatives(args)
        if negatives:
            options["negatives"] = index.geo.examples_query(negatives)
        if args.find_all:
            return _find_all(args, index, query, options)
        hits = index.geo.search(query, k, **options)
        model_gsd = index.model_gsds
        rasters = {r["id"]: r for r in index.rasters()} if args.stac is not None else {}
    if args.stac is not None:
        from ..geo.stac import hits_collection
        from ..io_utils import atomic_write_text

        atomic_write_text(args.stac, json.dumps(hits_collection(hits, rasters), indent=1))
    if args.geojson is not None:
        footprints.write_geojson(args.geojson, hits)
    if args.csv is not None:
        footprints.write_csv(args.csv, hits)
    if args.json:
        out = {"index": str(args.index), "model_gsd": model_gsd, "query": query.described | _described_negatives(args),
               "k": args.k,
               "radius": args.radius, "aoi": options["aoi"], "datetime": args.datetime, "rerank": args.rerank == "on"}
        print(json.dumps(out | {"results": [h.to_dict() for h in hits]}, indent=1))
    else:
        print(_geo_table(hits))
        print(f"model resolution: {model_resolution(model_gsd)}")
    for path in (args.geojson, args.csv, args.stac):
        if path is not None:
            print(f"wrote {len(hits)} results to {path}")
    return 0


def _find_all(args: argparse.Namespace, index, query, options: dict) -> int:
    """``--find-all``: every candidate at most the threshold, as merged areas (:meth:`GeoSearch.find_all`)."""
    from ..feedback import FIND_ALL_THRESHOLD
    from ..io_utils import atomic_write_text

    if args.csv is not None or args.stac is not None:
        raise ValueError("--find-all writes areas: give --geojson (not --csv or --stac)")
    if args.radius is not None or args.offset or args.k is not None:
        raise ValueError("--find-all keeps every candidate at most --threshold: no --k, --radius or --offset")
    threshold = FIND_ALL_THRESHOLD if args.threshold is None else args.threshold
    found = index.geo.find_all(query, options.get("negatives"), threshold=threshold, aoi=options["aoi"],
                               datetime=args.datetime, rerank=options["rerank"], labels=options["labels"])
    if args.geojson is not None:
        atomic_write_text(args.geojson, json.dumps(found["areas"]))
    areas = found["areas"]["features"]
    if args.json:
        print(json.dumps({"index": str(args.index), "query": query.described | _described_negatives(args)}
                         | {k: found[k] for k in ("threshold", "count", "capped", "ids")} | {"areas": found["areas"]},
                         indent=1))
    else:
        print(f"{found['count']} chips in {len(areas)} area{'' if len(areas) == 1 else 's'} at threshold "
              f"{threshold} (of {len(found['scores'])} candidates)"
              + ("; capped: every diffused candidate was kept, narrow --aoi or --datetime to see more"
                 if found["capped"] else ""))
        for f in areas:
            best = f["properties"]["best_score"]
            print(f"  {f['properties']['chips']} chips" + ("" if best is None else f", best score {best:.3f}"))
    if args.geojson is not None and not args.json:
        print(f"wrote {len(areas)} areas to {args.geojson}")
    return 0


def _run_same_place(args: argparse.Namespace) -> int:
    """The same place in every indexed acquisition of an indexed chip, in date order."""
    from ..index import Index

    with Index.open(args.index, args.model) as index:
        rows = index.geo.same_place(args.same_place)
    if args.json:
        print(json.dumps({"index": str(args.index), "same_place": args.same_place, "results": rows}, indent=1))
        return 0
    table = [("date", "id", "iou", "window", "raster")] + [
        (_date(r["datetime"], r["datetime_end"]), "-" if r["id"] is None else str(r["id"]),
         "read" if r["iou"] is None else f"{r['iou']:.2f}", ",".join(map(str, r["window"])), Path(r["raster"]).name)
        for r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(4)]
    print("\n".join("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4] for r in table))
    return 0


def _date(start: str | None, end: str | None) -> str:
    """A raster's acquisition for a table: the day, or ``START..END`` days for an interval, ``-`` unknown."""
    if start is None:
        return "-"
    return start[:10] if end is None else f"{start[:10]}..{end[:10]}"


def _geo_table(hits: list) -> str:
    """Fixed-width columns: rank, distance, similarity, id, lon, lat, date, raster window, raster name."""
    rows = [("rank", "dist", "sim", "id", "lon", "lat", "date", "window", "raster")]
    for h in hits:
        rows.append((str(h.rank), str(h.distance), "-" if h.similarity is None else f"{h.similarity:.3f}", str(h.id),
                     "-" if h.lon is None else f"{h.lon:.6f}", "-" if h.lat is None else f"{h.lat:.6f}",
                     _date(h.datetime, h.datetime_end), "-" if h.window is None else ",".join(map(str, h.window)),
                     Path(h.raster).name if h.raster else h.path))
    widths = [max(len(r[i]) for r in rows) for i in range(8)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:8], widths)) + "  " + r[8] for r in rows]
    return "\n".join(lines) if hits else "no results"


def _table(hits: list) -> str:
    """Fixed-width columns: rank, Hamming distance, descriptor similarity, id, label, path."""
    rows = [("rank", "dist", "sim", "id", "label", "path")]
    rows += [(str(h.rank), str(h.distance), "-" if h.similarity is None else f"{h.similarity:.3f}", str(h.id),
              h.label or "-", h.path) for h in hits]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + "  " + r[5] for r in rows]
    return "\n".join(lines) if hits else "no results"
