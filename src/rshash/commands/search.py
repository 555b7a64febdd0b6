"""``rshash search``: the nearest images in an index to a query image or an indexed id."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "search",
        help="find the images nearest to a query image (or indexed id) by Hamming distance",
    )
    parser.add_argument("--index", required=True, type=Path, metavar="INDEX_DIR")
    parser.add_argument("query", nargs="?", type=Path, metavar="QUERY_IMAGE", help="query image file")
    parser.add_argument("--id", type=int, help="query by an image already in the index (itself excluded)")
    parser.add_argument("--k", type=int, help="number of results (default 20; with --radius: no limit)")
    parser.add_argument("--radius", type=int, help="every image within this Hamming distance instead of the k nearest")
    parser.add_argument("--model", type=Path, metavar="MODEL_DIR", help="model directory if the recorded one moved")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..index import Index

    if (args.query is None) == (args.id is None):
        raise ValueError("give either a QUERY_IMAGE or --id N")
    if args.k is not None and args.k < 1:
        raise ValueError(f"--k must be >= 1, got {args.k}")
    query = args.id if args.id is not None else args.query
    with Index.open(args.index, args.model) as index:
        if args.radius is not None:
            hits = index.range_search(query, args.radius)[: args.k]
        else:
            hits = index.search(query, args.k or 20)
    if args.json:
        described = {"id": args.id} if args.id is not None else {"image": str(args.query)}
        out = {"index": str(args.index), "query": described, "k": args.k, "radius": args.radius}
        print(json.dumps(out | {"results": [asdict(h) for h in hits]}, indent=1))
    else:
        print(_table(hits))
    return 0


def _table(hits: list) -> str:
    """Fixed-width columns: rank, Hamming distance, id, label, path."""
    rows = [("rank", "dist", "id", "label", "path")]
    rows += [(str(h.rank), str(h.distance), str(h.id), h.label or "-", h.path) for h in hits]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4] for r in rows]
    return "\n".join(lines) if hits else "no results"
