"""``rshash data``: fetch a benchmark dataset (``download``) and inspect an image folder (``info``)."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from ..data.datasets import label_counts, load_records
from ..data.download import UCMERCED_PIXELS, UCMERCED_URL, download_dataset
from ..data.images import UnreadableImage, load_rgb
from ..progress import progress_bar

#: Downloadable datasets: name -> (default URL, packaged pixel manifest, default install dir).
DATASETS = {"ucmerced": (UCMERCED_URL, UCMERCED_PIXELS, Path("data/UCMerced_LandUse"))}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="download or inspect image datasets")
    sub = parser.add_subparsers(dest="data_command", required=True)

    dl = sub.add_parser("download", help="download, verify and install a benchmark dataset")
    dl.add_argument("dataset", choices=sorted(DATASETS))
    dl.add_argument("--to", type=Path, help="dataset directory to create (default: data/UCMerced_LandUse)")
    dl.add_argument("--url", help="download from this URL instead of the official one")
    dl.add_argument("--sha256", help="expected SHA-256 of the zip file")
    dl.add_argument("--no-verify-pixels", action="store_true", help="skip the per-image decoded-pixel check")
    dl.add_argument("--force", action="store_true", help="replace an existing non-empty directory")
    dl.add_argument("--keep-zip", action="store_true", help="keep the downloaded zip next to the dataset")
    dl.set_defaults(func=_download)

    info = sub.add_parser("info", help="class counts, image sizes and unreadable files of a dataset")
    info.add_argument("source", type=Path, help="folder of class sub-folders or a CSV manifest")
    info.set_defaults(func=_info)


def _download(args: argparse.Namespace) -> int:
    url, manifest, default_dir = DATASETS[args.dataset]
    result = download_dataset(
        args.to or default_dir,
        args.url or url,
        sha256=args.sha256,
        pixel_manifest=None if args.no_verify_pixels else manifest,
        force=args.force,
        keep_zip=args.keep_zip,
    )
    checked = f"{result.pixels_verified} images pixel-verified" if result.pixels_verified is not None else (
        "pixel check skipped"
    )
    print(f"installed {result.files} files in {result.path} ({checked})")
    print(f"use it with --data {result.path} or RSHASH_DATA={result.path}")
    return 0


def _table(title: str, counts: Counter) -> list[str]:
    width = max((len(str(k)) for k in counts), default=0)
    return [title] + [f"  {str(k):<{width}}  {v}" for k, v in sorted(counts.items(), key=lambda kv: str(kv[0]))]


def _info(args: argparse.Namespace) -> int:
    records = load_records(args.source)
    sizes: Counter = Counter()
    unreadable: list[str] = []
    for rec in progress_bar(iterable=records, desc="reading", unit="img"):
        try:
            arr = load_rgb(rec.path)
        except UnreadableImage as exc:
            unreadable.append(str(exc))
            continue
        sizes[f"{arr.shape[1]}x{arr.shape[0]}"] += 1
    labels = label_counts(records)
    lines = [f"{args.source}: {len(records)} images, {len([k for k in labels if k is not None])} classes"]
    lines += _table("class counts:", Counter({k or "(unlabelled)": v for k, v in labels.items()}))
    lines += _table("image sizes (WxH):", sizes)
    lines += [f"unreadable files: {len(unreadable)}"] + [f"  {msg}" for msg in unreadable]
    print("\n".join(lines))
    return 0
