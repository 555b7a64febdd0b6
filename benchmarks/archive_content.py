"""What the self-supervised recipe's grid costs on content: UCMD as an unlabelled image folder.

``rshash train --data FOLDER`` on a folder without class folders learns from augmented views alone (no time pairs).
Here UCMD's images are that folder (labels hidden from training) and the labels only score the codes: every image
queries all the others, relevant = same class, mAP@all of the Hamming order (ties: expected AP under a random order). Rows:
the recipe with its grid (pooled levels beside the 4 x 4 grid of the stage-5 map: what rasters with time pairs get)
and ``--grid 0`` (the levels only), each with the recipe's settings but ``views`` (4 instead of 8, to keep the run
short: stated in the output); ``train_uses`` says which of them ``rshash train`` picks for such a folder
(:func:`rshash.training.selfsup.recipe_for`).

    python benchmarks/archive_content.py [--images N] [--seeds 0] [--cache-dir DIR]

Writes benchmarks/results/archive_content.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from rshash.io_utils import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "archive_content.json"
VIEWS = 4
ROWS = {"levels + grid 4x4 (the recipe where time pairs exist)": {}, "--grid 0 (levels only)": {"grid": 0}}


def hamming_map(codes: np.ndarray, labels: np.ndarray) -> float:
    """mAP@all of the Hamming order, every item querying the others, ties in expected random order
    (:func:`rshash.evaluation.metrics.tie_aware_ap`)."""
    from rshash.codes import hamming_matrix, pack_codes
    from rshash.evaluation.metrics import tie_aware_ap

    packed = pack_codes(codes)
    dist = hamming_matrix(packed, packed)
    rel = labels[None, :] == labels[:, None]
    np.fill_diagonal(dist, codes.shape[1] + 1)  # the query itself: last and not relevant, so it counts for nothing
    np.fill_diagonal(rel, False)
    return float(tie_aware_ap(dist, rel).mean())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="UCMD (default $RSHASH_DATA, else ../shared/data/UCMerced_LandUse)")
    p.add_argument("--images", type=int, default=2100, help="images used (an even sample; default all)")
    p.add_argument("--seeds", default="0", help="recipe seeds (augmentation draws, ITQ start), comma-separated")
    p.add_argument("--cache-dir", help="feature cache (default $RSHASH_CACHE)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    from rshash.backbone import create_backbone
    from rshash.data.datasets import load_records, resolve_data_dir
    from rshash.training.selfsup import SelfSupConfig, fit_head, image_chips, place_features, recipe_for

    started = time.perf_counter()
    records = load_records(resolve_data_dir(args.data))
    records = [records[i] for i in np.linspace(0, len(records) - 1, min(args.images, len(records))).round().astype(int)]
    backbone = create_backbone()
    place = image_chips(records, backbone.input_size, None, [])
    labels = np.array([r.label for r in records])
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    rows: dict[str, list[float]] = {}
    for seed in seeds:
        for name, change in ROWS.items():
            config = replace(SelfSupConfig(views=VIEWS, seed=seed), **change)
            features = place_features(place, config, backbone, args.cache_dir)
            fit = fit_head(features, config)
            rows.setdefault(name, []).append(round(hamming_map(fit.codes(features.levels()[:, 0]), labels), 4))
            print(f"seed {seed} {name}: {rows[name][-1]}", flush=True)
    out = {
        "benchmark": "archive_content",
        "command": "python benchmarks/archive_content.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": platform.python_version()},
        "protocol": f"UCMD as an unlabelled image folder ({len(records)} images, an even sample; labels score only); "
                    "self-supervised recipe from augmented views alone (no time pairs), 128 bits; every image "
                    "queries the others; relevant = same class; mAP@all of the Hamming order, tie-aware (expected AP "
                    f"under a random order within equal distances); views {VIEWS} (the recipe's default is 8)",
        "recipe": asdict(SelfSupConfig()), "seeds": seeds,
        "train_uses": "--grid 0 (levels only)" if recipe_for(SelfSupConfig(), place).grid == 0 else next(iter(ROWS)),
        "map_all_hamming": {k: {"per_seed": v, "mean": round(float(np.mean(v)), 4)} for k, v in rows.items()},
        "seconds": round(time.perf_counter() - started, 1),
    }
    atomic_write_text(args.out, json.dumps(out, indent=1) + "\n")
    print(json.dumps(out["map_all_hamming"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
