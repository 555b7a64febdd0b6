"""``rshash export``: the index out in the formats other tools read (GeoParquet, STAC)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "export", help="write the index (footprints, dates, windows, labels, codes, descriptors) as GeoParquet, or "
                       "its rasters as a STAC ItemCollection")
    parser.add_argument("--index", required=True, type=Path, metavar="INDEX_DIR")
    out = parser.add_mutually_exclusive_group(required=True)
    out.add_argument("--geoparquet", type=Path, metavar="OUT.parquet",
                     help="GeoParquet 1.1 file, one row per item (written atomically: a failed export keeps the "
                          "previous file)")
    out.add_argument("--stac", type=Path, metavar="OUT.json",
                     help="the indexed rasters as a STAC ItemCollection (footprint, date, proj: fields, the file as "
                          "its data asset)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..index import Index
    from ..index.store import DB_NAME
    from ..io_utils import atomic_write_text

    if not (Path(args.index) / DB_NAME).is_file():
        raise FileNotFoundError(f"no index in {args.index}")
    with Index.open(args.index) as index:
        if args.stac is not None:
            from ..geo.stac import rasters_collection

            collection = rasters_collection(index.rasters())
            atomic_write_text(args.stac, json.dumps(collection, indent=1))
            print(f"wrote {len(collection['features'])} rasters as STAC Items to {args.stac}")
            return 0
        try:
            summary = index.export_geoparquet(args.geoparquet)
        except FileNotFoundError:
            raise
        except OSError as exc:  # disk full, no permission: the previous file (if any) is kept
            raise RuntimeError(f"cannot write {args.geoparquet}: {exc}") from exc
    print(f"wrote {summary['rows']} items ({summary['chips']} raster chips) to {summary['path']}: "
          f"{summary['bytes'] / 1e6:.2f} MB")
    return 0
