"""Same place, other date: the same-place protocol (rshash.evaluation.same_place) on the shared acquisitions.

For each place (NAIP 2009/2020 at 5 m, 2 x 2 quadrant folds; Landsat 1985/2000/2020 at about 90 m, 4 strip
folds; Landsat also with the held-out date: training reads from 1985 and 2000 only, 2020 queries the others):
64 px grid chips at native resolution, read by the indexing reader (same bands and stretch), resized to the
model's input; every chip of the held-out block at every date queries every chip of every date; relevant = the
chips of the same footprint at the other dates; tie-aware recall@10 pooled over the four folds.

Rows measured here:
* ``pretrained_cosine``: untrained ImageNet EfficientNet-Lite0 head features, average-pooled, cosine (the
  baseline ``b`` of issue 15's targets);
* ``pretrained_itq``: the same features hashed by ITQ at ``--bits``, fitted on each fold's training chips
  (outside the held-out block and its guard band), Hamming order (tie-aware);
* with ``--model MODEL_DIR``: the model's own codes (Hamming order, tie-aware), its two-stage order with a fixed
  shortlist of 50 (``rshash.ranking.two_stage_order``, the index's ranking) and its float descriptors (cosine),
  all through the exported ONNX encoder. Without ``--model`` these rows are absent (null in ``targets``): no
  self-supervised archive model exists yet (issue 15, item 1, is open).

    python benchmarks/archive_learning.py [--model MODEL_DIR] [--rasters ../shared/data/rasters] [--bits 64]

Writes ``benchmarks/results/archive_learning.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from results_doc import write_section  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "archive_learning.json"
SHARED_RASTERS = ROOT.parent / "shared" / "data" / "rasters"
PLACES = {
    "naip": (["naip_m_4709963_se_14_1_20090818.tif", "naip_m_4709963_se_14_1_20200831.tif"], "quadrants", None),
    "landsat": (["landsat_ucayali_1985.tif", "landsat_ucayali_2000.tif", "landsat_ucayali_2020.tif"], "strips", None),
    "landsat_heldout_date": (["landsat_ucayali_1985.tif", "landsat_ucayali_2000.tif", "landsat_ucayali_2020.tif"],
                             "strips", (0, 1)),
}
INPUT_SIZE = 224
SHORTLISTS = (10, 20, 50, 100, None)


def _cosine(x: np.ndarray) -> np.ndarray:
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return 1.0 - x @ x.T


def _hamming(codes: np.ndarray) -> np.ndarray:
    c = codes.astype(np.int32)
    return (c[:, None, :] != c[None, :, :]).sum(axis=2).astype(np.float64)


def evaluate_place(name: str, rasters: Path, bits: int, model: Path | None) -> dict:
    from rshash.baselines.itq import ITQ
    from rshash.evaluation import same_place as sp
    from rshash.features import pretrained_embeddings

    files, layout, train_dates = PLACES[name]
    started = time.perf_counter()
    place = sp.read_place([rasters / f for f in files], INPUT_SIZE, layout=layout)
    folds = sp.folds(place, train_dates=train_dates)
    if train_dates is not None:  # the held-out date queries: only chips of the dates not trained on
        folds = [sp.Fold(f.index, f.queries[~np.isin(place.date[f.queries], train_dates)], f.train, f.guard)
                 for f in folds]
    features = pretrained_embeddings(place.pixels)
    distances = {"pretrained_cosine": [_cosine(features)] * len(folds)}
    # ITQ needs bits <= training chips: a fold with fewer chips gets fewer bits (stated in the result)
    itq_bits = [min(bits, len(f.train) - 1) for f in folds]
    distances["pretrained_itq"] = [_hamming(ITQ(b, seed=0).fit(features[f.train]).codes(features))
                                   for f, b in zip(folds, itq_bits)]
    if model is not None:
        from rshash.encoder import Encoder
        from rshash.ranking import quantize_descriptors, two_stage_order

        encoded = Encoder(model).encode(place.pixels)
        ham = _hamming(encoded.codes)
        distances["model_hamming"] = [ham] * len(folds)
        distances["model_float_cosine"] = [_cosine(encoded.descriptors)] * len(folds)
        q = quantize_descriptors(encoded.descriptors).astype(np.float32)
        q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        bits = encoded.codes.shape[1]
        unreturned = ham.copy()
        np.fill_diagonal(unreturned, bits + 1)  # the query never takes a shortlist place (as in the index)
        for shortlist in SHORTLISTS:
            order = two_stage_order(unreturned, np.arange(len(place)), bits, q @ q.T, rerank=True,
                                    shortlist=shortlist or len(place))
            rank = np.empty_like(order, dtype=np.float64)
            np.put_along_axis(rank, order, np.arange(order.shape[1], dtype=np.float64)[None, :].repeat(len(order), 0), 1)
            distances[f"model_two_stage_L{shortlist or 'all'}"] = [rank] * len(folds)
    changed = sp.changed_footprints(place)
    rows, per_query = {}, {}
    for key, per_fold in distances.items():
        r10, r1, ranks, fold_rows = [], [], [], []
        for fold, dist in zip(folds, per_fold):
            d, rel = sp.query_matrices(place, fold.queries, dist[fold.queries])
            a, b, c = sp.tie_aware_recall(d, rel, 10), sp.tie_aware_recall(d, rel, 1), sp.first_match_rank(d, rel)
            r10.append(a), r1.append(b), ranks.append(c)
            fold_rows.append(round(float(np.nanmean(a)), 4) if len(a) else None)
        queries = np.concatenate([f.queries for f in folds])
        per_query[key] = np.concatenate(r10)
        rows[key] = sp.summarise(per_query[key], np.concatenate(r1), np.concatenate(ranks), changed[queries]) | {
            "recall_at_10_per_fold": fold_rows}
    queries = np.concatenate([f.queries for f in folds])
    groups = place.group[queries]
    for key in rows:
        if key != "pretrained_cosine":
            rows[key]["ci95_difference_to_pretrained_cosine"] = sp.bootstrap_difference(
                per_query[key], per_query["pretrained_cosine"], groups)
    pairs = {}
    dates = place.date[queries]
    for d in np.unique(dates):
        pairs[Path(files[int(d)]).stem] = round(float(np.nanmean(per_query["pretrained_cosine"][dates == d])), 4)
    return {"rasters": files, "layout": layout, "train_dates": train_dates, "chips": len(place),
            "chips_per_date": np.bincount(place.date).tolist(), "footprints": int(place.group.max() + 1),
            "queries": int(len(queries)), "guard_chips_per_fold": [len(f.guard) for f in folds],
            "train_chips_per_fold": [len(f.train) for f in folds], "itq_bits_per_fold": itq_bits, "rows": rows,
            "pretrained_cosine_recall_at_10_by_query_date": pairs, "seconds": round(time.perf_counter() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="model directory whose ONNX encoder is measured too")
    parser.add_argument("--rasters", type=Path, default=Path(os.environ.get("RSHASH_RASTERS", SHARED_RASTERS)))
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    places = {name: evaluate_place(name, args.rasters, args.bits, args.model) for name in PLACES}

    def row(place: str, key: str, field: str = "recall_at_10"):
        r = places[place]["rows"].get(key)
        return None if r is None else r[field]

    targets = {
        "naip_recall10_pretrained_cosine": row("naip", "pretrained_cosine"),
        "naip_recall10_hamming": row("naip", "model_hamming"),
        "naip_recall10_two_stage_L50": row("naip", "model_two_stage_L50"),
        "naip_hamming_ci_low": None if row("naip", "model_hamming") is None
        else row("naip", "model_hamming", "ci95_difference_to_pretrained_cosine")[0],
        "landsat_recall10_pretrained_cosine": row("landsat", "pretrained_cosine"),
        "landsat_recall10_hamming": row("landsat", "model_hamming"),
        "landsat_recall10_two_stage_L50": row("landsat", "model_two_stage_L50"),
        "landsat_hamming_ci_low": None if row("landsat", "model_hamming") is None
        else row("landsat", "model_hamming", "ci95_difference_to_pretrained_cosine")[0],
        "landsat_heldout_date_recall10_hamming": row("landsat_heldout_date", "model_hamming"),
        "landsat_heldout_date_recall10_pretrained_cosine": row("landsat_heldout_date", "pretrained_cosine"),
        "bits": args.bits,
    }
    # keys of the issue this script cannot measure yet (no self-supervised archive model, no UCMD run here): null
    targets |= dict.fromkeys(("ucmd_unseen_hamming", "ucmd_unseen_hamming_std", "ucmd_unseen_two_stage",
                              "ucmd_unseen_pretrained_cosine", "ucmd_unseen_finetuned_cosine", "ucmd_A_default_ranking",
                              "ucmd_A_std", "ucmd_Aval_default_minus_hamming", "ssl_train_seconds_naip",
                              "ssl_train_seconds_landsat", "main_job_cold_seconds"))
    out = {
        "benchmark": "archive_learning",
        "command": "python benchmarks/archive_learning.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": platform.python_version()},
        "model": None if args.model is None else args.model.name,
        "protocol": {"chips": "64 px at native resolution, whole cells of a grid anchored at each raster's origin, "
                              f"resized to {INPUT_SIZE} px", "match": "lon/lat footprint IoU >= 0.5",
                     "folds": "4 blocks (NAIP 2x2 quadrants, Landsat 4 vertical strips); training reads outside the "
                              "held-out block and a one-chip guard band; guard chips never queried",
                     "database": "every grid chip of every date", "queries": "every held-out-block chip with a match "
                     "at another date", "metric": "tie-aware recall@10 (expected under random order among equal "
                     "distances), pooled over folds; 95 % interval of the difference by footprint bootstrap",
                     "seeds": "ITQ seed 0; untrained features are deterministic"},
        "targets": targets, "places": places,
        "not_measured": "the self-supervised archive model (issue 15 item 1), UCMD keys, training time and main-job "
                        "keys: no such model exists yet",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    write_section("archive_learning", markdown(out))
    print(json.dumps(targets, indent=1))
    return 0


def markdown(out: dict) -> str:
    lines = ["## Same place, other date (the same-place protocol)", "",
             f"`{out['command']}` ({out['date']}). {out['protocol']['metric']}; {out['protocol']['folds']}.", "",
             "| place | chips | queries | row | recall@10 | recall@1 | median rank | stable / changed | per fold |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, place in out["places"].items():
        for key, r in place["rows"].items():
            lines.append(f"| {name} | {place['chips']} | {place['queries']} | {key} | {r['recall_at_10']} | "
                         f"{r['recall_at_1']} | {r['median_first_match_rank']} | {r['recall_at_10_stable']} / "
                         f"{r['recall_at_10_changed']} | {r['recall_at_10_per_fold']} |")
    lines += ["", f"Not measured: {out['not_measured']}."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
