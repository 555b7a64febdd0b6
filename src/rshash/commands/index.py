"""``rshash index``: encode an image folder or manifest into a searchable index, or remove images from one."""

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
    action.add_argument("--remove", type=int, nargs="+", metavar="ID", help="remove these image ids")
    parser.add_argument("--model", type=Path, metavar="MODEL_DIR", help="model directory (required for a new index)")
    parser.add_argument(
        "--kind", choices=KIND_CHOICES, help="search structure: flat (exact, default), multihash or ivf (sub-linear)"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="images encoded and committed together")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..index import Index

    if args.remove:
        with Index.open(args.out, args.model) as index:
            return _remove(index, args.remove)
    with Index.open_or_create(args.out, args.model, args.kind) as index:
        report = index.add_paths(args.images, batch_size=args.batch_size)
        stats = index.stats()
    report_path = args.out / REPORT_NAME
    atomic_write_text(report_path, json.dumps({"images": str(args.images), **report.to_dict()}, indent=1))
    print(f"{args.images}: {report.summary()}")
    print(f"{args.out}: {stats['images']} images, {stats['bits']}-bit codes, kind {stats['kind']}")
    if report.skipped:
        print(f"unreadable files and reasons: {report_path}")
    return 0


def _remove(index: Index, ids: list[int]) -> int:
    removed = index.remove(ids)
    missing = sorted(set(ids) - set(removed))
    print(f"removed {len(removed)} image(s); {len(index)} left in {index.path}")
    if missing:
        print(f"not in the index: {' '.join(map(str, missing))}", file=sys.stderr)
    return 0
