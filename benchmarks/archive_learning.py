"""Same place, other date: the same-place protocol (rshash.evaluation.same_place) on the shared acquisitions.

For each place (NAIP 2009/2020 at 5 m, 2 x 2 quadrant folds; Landsat 1985/2000/2020 at about 90 m, 4 strip
folds; Landsat also with the held-out date: training reads from 1985 and 2000 only, 2020 queries the others):
64 px grid chips at native resolution, read by the indexing reader (same bands and stretch), resized to the
model's input; every chip of the held-out block at every date queries every chip of every date; relevant = the
chips of the same footprint at the other dates; tie-aware recall@10 pooled over the four folds.

Rows measured here:
* ``pretrained_cosine``: untrained ImageNet EfficientNet-Lite0 head features, average-pooled, cosine (the
  baseline ``b`` of issue 15's targets);
* ``pretrained_itq``: the same features hashed by ITQ at the recipe's bits, fitted on each fold's training chips
  (outside the held-out block and its guard band), Hamming order (tie-aware);
* ``ssl_*``: the self-supervised recipe of ``rshash train --rasters`` (rshash.training.selfsup.SelfSupConfig),
  one model per fold and seed trained on the fold's training chips only: its Hamming order, its two-stage orders
  (the index's ranking, shortlist L) and its own float descriptors (cosine); ``ablation_*``: the recipe with one
  change (seed 0 only): time pairs only, augmentations only, 64 or 256 bits, the loss refinement;
* with ``--model MODEL_DIR``: a given model's codes, two-stage order and descriptors through its ONNX encoder.

The timings train ``rshash train --rasters`` cold on each place; ``main_job_cold_seconds`` is read from
``benchmarks/results/main_job.json`` (run ``benchmarks/main_job.py`` first).

    python benchmarks/archive_learning.py [--seeds 0,1,2] [--rasters ../shared/data/rasters] [--no-timing]

Writes ``benchmarks/results/archive_learning.json`` and its section of docs/RESULTS.md.
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
from results_doc import publish  # noqa: E402

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


def _model_rows(prefix: str, codes: np.ndarray, descriptors: np.ndarray, bits: int, n: int) -> dict:
    """Distance matrices of a model's Hamming order, two-stage orders and float descriptors."""
    ham = _hamming(codes)
    out = {f"{prefix}_hamming": ham, f"{prefix}_float_cosine": _cosine(descriptors)}
    for shortlist in SHORTLISTS:
        from rshash.ranking import SELF_SUPERVISED_WEIGHT, quantize_descriptors, two_stage_order

        q = quantize_descriptors(descriptors).astype(np.float32)
        q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        unreturned = ham.copy()
        np.fill_diagonal(unreturned, bits + 1)  # the query never takes a shortlist place (as in the index)
        order = two_stage_order(unreturned, np.arange(n), bits, q @ q.T, rerank=True, shortlist=shortlist or n,
                                weight=SELF_SUPERVISED_WEIGHT)
        rank = np.empty_like(order, dtype=np.float64)
        np.put_along_axis(rank, order, np.arange(order.shape[1], dtype=np.float64)[None, :].repeat(n, 0), 1)
        out[f"{prefix}_two_stage_L{shortlist or 'all'}"] = rank
    return out


def _score(place, folds, per_fold: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
    """Per-query recall@10, recall@1 and first-match rank pooled over folds, and recall@10 per fold."""
    from rshash.evaluation import same_place as sp

    r10, r1, ranks, fold_rows = [], [], [], []
    for fold, dist in zip(folds, per_fold):
        d, rel = sp.query_matrices(place, fold.queries, dist[fold.queries])
        a, b, c = sp.tie_aware_recall(d, rel, 10), sp.tie_aware_recall(d, rel, 1), sp.first_match_rank(d, rel)
        r10.append(a), r1.append(b), ranks.append(c)
        fold_rows.append(round(float(np.nanmean(a)), 4) if len(a) else None)
    return np.concatenate(r10), np.concatenate(r1), np.concatenate(ranks), fold_rows


def _ssl_variants(default) -> dict:
    """The default self-supervised recipe and its ablations (measured on seed 0 only)."""
    from dataclasses import replace

    return {"ssl": default,
            "ablation_levels_only": replace(default, grid=0),
            "ablation_grid_only": replace(default, grid=default.grid or 4, grid_levels=False, grid_weight=1.0),
            "ablation_augmentation_pairs_0.1": replace(default, aug_weight=0.1),
            "ablation_augmentations_only": replace(default, aug_weight=1.0, use_time_pairs=False),
            "ablation_bits64": replace(default, bits=64),
            "ablation_bits256": replace(default, bits=256, dims=256, pca_dims=512),
            "ablation_refine20": replace(default, refine_epochs=20)}


def ssl_distances(place, folds, seeds: list[int], cache_dir: Path, onnx_dir: Path) -> tuple[dict, dict]:
    """Self-supervised models trained per fold on the fold's training chips (their time pairs and augmented
    views), for each seed; the codes and descriptors apply the fitted head to the frozen backbone's ONNX features
    of the chips. Fold 0 of seed 0 is also encoded end to end by the exported model's ONNX encoder: the agreement
    of the two paths is returned."""
    from rshash.backbone import create_backbone
    from rshash.encoder import Encoder
    from rshash.model_dir import save_model_dir
    from rshash.training.selfsup import SelfSupConfig, build_model, fit_head, place_features, raster_sources

    backbone = create_backbone()
    out: dict[str, list] = {}
    check: dict = {}
    for seed in seeds:
        default = SelfSupConfig(seed=seed)
        for name, config in _ssl_variants(default).items():
            if name != "ssl" and seed != seeds[0]:
                continue
            features = place_features(place, config, backbone, cache_dir)  # the views' features: cached on disk
            x0 = features.levels()[:, 0]
            per_fold = []
            for fold in folds:
                fit = fit_head(features, config, fold.train)
                embedded = fit.embed(x0)
                codes = embedded @ fit.rotation >= 0
                per_fold.append((codes, embedded))
                if name == "ssl" and seed == seeds[0] and fold.index == 0:
                    save_model_dir(onnx_dir, build_model(fit, config, raster_sources(place), backbone))
                    encoded = Encoder(onnx_dir).encode(place.pixels)
                    check = {"bit_agreement": round(float((encoded.codes == codes).mean()), 5),
                             "descriptor_max_abs_difference": round(float(np.abs(
                                 encoded.descriptors - embedded / np.linalg.norm(embedded, axis=1, keepdims=True)
                             ).max()), 5),
                             "onnx_codes": encoded.codes, "numpy_codes": codes}
            rows = [_model_rows(name, c, e, config.bits, len(place)) for c, e in per_fold]
            for row_key in rows[0]:
                if name != "ssl" and not row_key.endswith(("_hamming", "_two_stage_L50", "_float_cosine")):
                    continue
                out.setdefault(row_key, []).append([r[row_key] for r in rows])
    return out, check


def place_folds(place, train_dates: tuple[int, ...] | None) -> list:
    """The protocol's four folds; with ``train_dates`` (the held-out date) only chips of the other dates query."""
    from rshash.evaluation import same_place as sp

    folds = sp.folds(place, train_dates=train_dates)
    if train_dates is None:
        return folds
    return [sp.Fold(f.index, f.queries[~np.isin(place.date[f.queries], train_dates)], f.train, f.guard)
            for f in folds]


def evaluate_place(name: str, rasters: Path, bits: int, model: Path | None, seeds: list[int] | None = None,
                   cache_dir: Path | None = None, work: Path | None = None) -> dict:
    from rshash.baselines.itq import ITQ
    from rshash.evaluation import same_place as sp
    from rshash.features import pretrained_embeddings

    files, layout, train_dates = PLACES[name]
    started = time.perf_counter()
    place = sp.read_place([rasters / f for f in files], INPUT_SIZE, layout=layout)
    folds = place_folds(place, train_dates)
    features = pretrained_embeddings(place.pixels)
    distances = {"pretrained_cosine": [[_cosine(features)] * len(folds)]}  # per seed, per fold
    # ITQ needs bits <= training chips: a fold with fewer chips gets fewer bits (stated in the result)
    itq_bits = [min(bits, len(f.train) - 1) for f in folds]
    distances["pretrained_itq"] = [[_hamming(ITQ(b, seed=0).fit(features[f.train]).codes(features))
                                    for f, b in zip(folds, itq_bits)]]
    if model is not None:
        from rshash.encoder import Encoder

        encoded = Encoder(model).encode(place.pixels)
        for key, dist in _model_rows("model", encoded.codes, encoded.descriptors, encoded.codes.shape[1],
                                     len(place)).items():
            distances[key] = [[dist] * len(folds)]
    check = None
    if seeds:
        ssl, check = ssl_distances(place, folds, seeds, cache_dir, work / f"model-{name}")
        distances |= ssl
    changed = sp.changed_footprints(place)
    queries = np.concatenate([f.queries for f in folds])
    groups = place.group[queries]
    rows, per_query = {}, {}
    for key, per_seed in distances.items():
        scored = [_score(place, folds, per_fold) for per_fold in per_seed]
        per_query[key] = np.mean([s[0] for s in scored], axis=0)  # mean over seeds, per query
        rows[key] = sp.summarise(per_query[key], np.mean([s[1] for s in scored], axis=0),
                                 np.mean([s[2] for s in scored], axis=0), changed[queries]) | {
            "recall_at_10_per_fold": [round(float(np.mean([s[3][f] for s in scored])), 4) for f in range(len(folds))],
            "seeds": len(per_seed)}
        if len(per_seed) > 1:
            per_seed_means = [float(np.nanmean(s[0])) for s in scored]
            rows[key]["recall_at_10_per_seed"] = [round(v, 4) for v in per_seed_means]
            rows[key]["recall_at_10_seed_std"] = round(float(np.std(per_seed_means, ddof=1)), 4)
    for key in rows:
        if key != "pretrained_cosine":
            rows[key]["ci95_difference_to_pretrained_cosine"] = sp.bootstrap_difference(
                per_query[key], per_query["pretrained_cosine"], groups)
    dates = place.date[queries]
    by_date = {}
    for key in ("pretrained_cosine", "ssl_hamming", "ssl_two_stage_L50"):
        if key in per_query:
            by_date[key] = {Path(files[int(d)]).stem: round(float(np.nanmean(per_query[key][dates == d])), 4)
                            for d in np.unique(dates)}
    result = {"rasters": files, "layout": layout, "train_dates": train_dates, "chips": len(place),
              "chips_per_date": np.bincount(place.date).tolist(), "footprints": int(place.group.max() + 1),
              "queries": int(len(queries)), "guard_chips_per_fold": [len(f.guard) for f in folds],
              "train_chips_per_fold": [len(f.train) for f in folds], "itq_bits_per_fold": itq_bits, "rows": rows,
              "recall_at_10_by_query_date": by_date, "seconds": round(time.perf_counter() - started, 1)}
    if check:
        d, rel = sp.query_matrices(place, folds[0].queries, _hamming(check.pop("onnx_codes"))[folds[0].queries])
        onnx = float(np.nanmean(sp.tie_aware_recall(d, rel, 10)))
        d, rel = sp.query_matrices(place, folds[0].queries, _hamming(check.pop("numpy_codes"))[folds[0].queries])
        result["onnx_check_fold0_seed0"] = check | {
            "recall_at_10_hamming_onnx_encoder": round(onnx, 4),
            "recall_at_10_hamming_head_on_backbone_features": round(float(np.nanmean(sp.tie_aware_recall(d, rel, 10))), 4)}
    return result


def ssl_train_seconds(rasters: Path, files: list[str], work: Path) -> float:
    """Wall time of one ``rshash train --rasters`` run on the place's rasters, empty feature cache, 2 threads."""
    import shutil
    import subprocess

    cache = work / "cold-cache"
    shutil.rmtree(cache, ignore_errors=True)
    env = dict(os.environ, RSHASH_CACHE=str(cache), RSHASH_THREADS="2", RSHASH_PROGRESS="0", OMP_NUM_THREADS="2")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "rshash.cli", "train", "--rasters", *[str(rasters / f) for f in files],
                    "--out", str(work / "timed-model")], check=True, env=env, stdout=subprocess.DEVNULL)
    return round(time.perf_counter() - started, 1)


def ucmd_targets() -> tuple[dict, dict, str]:
    """The issue's UCMD keys, read from the results their own scripts wrote (None where a file is missing), and
    where they come from. The labelled default recipe is measured by ``ucmd_hashing.py`` (at its bits, its
    default ranking at the labelled model's re-rank weight); A-val from ``select_whitening.py --merge`` and
    ``--weights``."""
    from rshash.ranking import WHITENED_LABELLED_WEIGHT
    from rshash.training.hashing import DEFAULT_BITS

    keys = ("ucmd_unseen_hamming", "ucmd_unseen_hamming_std", "ucmd_unseen_two_stage", "ucmd_unseen_pretrained_cosine",
            "ucmd_unseen_finetuned_cosine", "ucmd_A_default_ranking", "ucmd_A_std", "ucmd_Aval_default_minus_hamming")
    out, a_val_std = dict.fromkeys(keys), None
    results = ROOT / "benchmarks" / "results"
    hashing, gate = results / "ucmd_hashing.json", results / "select_whitening.json"
    if hashing.is_file():
        h = json.loads(hashing.read_text())
        unseen = h.get("unseen", {}).get("map_all", {})

        def unseen_mean(row: str, field: str = "mean"):
            return unseen.get(row, {}).get("unseen_unseen", {}).get(field)

        a = h.get("protocol_A", {}).get("seeds_default", {}).get("reranked", {})
        out |= {"ucmd_unseen_hamming": unseen_mean("ours (Hamming)"),
                "ucmd_unseen_hamming_std": unseen_mean("ours (Hamming)", "std"),
                "ucmd_unseen_two_stage": unseen_mean("ours (re-ranked)"),
                "ucmd_unseen_pretrained_cosine": unseen_mean("cosine kNN, pretrained features"),
                "ucmd_unseen_finetuned_cosine": unseen_mean("cosine kNN, fine-tuned features"),
                "ucmd_A_default_ranking": a.get("mean"), "ucmd_A_std": a.get("std")}
    if gate.is_file():
        selected = json.loads(gate.read_text())
        weight = selected.get("weight", {})
        if weight.get("chosen") is not None:  # the chosen head at its chosen re-rank weight (--weights)
            out["ucmd_Aval_default_minus_hamming"] = weight["table"][str(weight["chosen"])]["minus_hamming"]["A-val"]
            a_val_std = weight["stats"]["A-val"]["hamming"]["std"]
        else:
            selection = selected.get("selection", {})
            row = selection.get("table", {}).get(selection.get("chosen"))
            if row:
                out["ucmd_Aval_default_minus_hamming"] = row["A-val default"]["mean"] - row["A-val hamming"]["mean"]
                a_val_std = row["A-val hamming"]["std"]
    out = {k: None if v is None else round(float(v), 4) for k, v in out.items()}
    a_val_std = None if a_val_std is None else round(float(a_val_std), 4)

    def met(flag_of, *values):
        return None if any(v is None for v in values) else bool(flag_of(*values))

    goals = {
        "unseen_hamming_above_pretrained_by_a_std": met(lambda h, c, sd: h - c > sd, out["ucmd_unseen_hamming"],
                                                        out["ucmd_unseen_pretrained_cosine"],
                                                        out["ucmd_unseen_hamming_std"]),
        "unseen_two_stage_at_least_finetuned_cosine": met(lambda t, f: t >= f, out["ucmd_unseen_two_stage"],
                                                          out["ucmd_unseen_finetuned_cosine"]),
        "A_default_at_least_0.98": met(lambda a: a >= 0.98, out["ucmd_A_default_ranking"]),
        "Aval_default_minus_hamming_at_least_minus_std": met(lambda d, sd: d >= -sd,
                                                             out["ucmd_Aval_default_minus_hamming"], a_val_std),
        "Aval_std": a_val_std,
    }
    return out, goals, (f"ucmd_unseen_* and ucmd_A_*: {hashing.name} (written by benchmarks/ucmd_hashing.py: the labelled "
                 f"default recipe at its bits ({DEFAULT_BITS}), re-ranked at its labelled weight {WHITENED_LABELLED_WEIGHT}; A over split seeds "
                 f"0-2, unseen@unseen over seeds 0-2); ucmd_Aval_default_minus_hamming: {gate.name} (written by "
                 "benchmarks/select_whitening.py --merge, then --weights: the chosen variant at its chosen re-rank "
                 "weight, mean over its seeds; std: of its Hamming order over those seeds)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="model directory whose ONNX encoder is measured too")
    parser.add_argument("--rasters", type=Path, default=Path(os.environ.get("RSHASH_RASTERS", SHARED_RASTERS)))
    parser.add_argument("--bits", type=int, default=None, help="ITQ baseline bits (default: the recipe's)")
    parser.add_argument("--seeds", default="0,1,2", help="self-supervised seeds, comma-separated ('' for none)")
    parser.add_argument("--no-timing", action="store_true", help="skip the cold `rshash train --rasters` timings")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--targets-only", action="store_true",
                        help="keep the places measured by the last run (--out) and recompute only the targets "
                             "(after ucmd_hashing.py, select_defaults.py or main_job.py wrote new results)")
    args = parser.parse_args(argv)
    import tempfile

    from rshash.training.selfsup import SelfSupConfig

    command = "python benchmarks/archive_learning.py " + " ".join(sys.argv[1:] if argv is None else argv)
    targets_command = None
    if args.targets_only:
        previous = json.loads(args.out.read_text())
        places, bits, command = previous["places"], previous["targets"]["bits"], previous["command"]
        timing = {name: previous["targets"][f"ssl_train_seconds_{name}"] for name in ("naip", "landsat")}
        targets_command = "python benchmarks/archive_learning.py --targets-only"
        seeds = previous["protocol"]["seeds"]
    else:
        bits = args.bits or SelfSupConfig.bits
        seeds = [int(v) for v in args.seeds.split(",") if v.strip()]
        with tempfile.TemporaryDirectory(prefix="archive-learning-") as tmp:
            work = Path(tmp)
            cache = work / "cache"  # features of this run only: the figures never come from a stale cache
            places = {name: evaluate_place(name, args.rasters, bits, args.model, seeds, cache, work)
                      for name in PLACES}
            timing = {} if args.no_timing else {name: ssl_train_seconds(args.rasters, PLACES[name][0], work)
                                                for name in ("naip", "landsat")}
    main_job = ROOT / "benchmarks" / "results" / "main_job.json"
    main_job_s = json.loads(main_job.read_text())["cold_seconds"] if main_job.is_file() else None

    def row(place: str, key: str, field: str = "recall_at_10"):
        r = places[place]["rows"].get(key)
        return None if r is None else r[field]

    def ci_low(place: str, key: str):
        r = places[place]["rows"].get(key)
        return None if r is None else r["ci95_difference_to_pretrained_cosine"][0]

    targets = {
        "naip_recall10_pretrained_cosine": row("naip", "pretrained_cosine"),
        "naip_recall10_hamming": row("naip", "ssl_hamming"),
        "naip_recall10_two_stage_L50": row("naip", "ssl_two_stage_L50"),
        "naip_hamming_ci_low": ci_low("naip", "ssl_hamming"),
        "landsat_recall10_pretrained_cosine": row("landsat", "pretrained_cosine"),
        "landsat_recall10_hamming": row("landsat", "ssl_hamming"),
        "landsat_recall10_two_stage_L50": row("landsat", "ssl_two_stage_L50"),
        "landsat_hamming_ci_low": ci_low("landsat", "ssl_hamming"),
        "landsat_heldout_date_recall10_hamming": row("landsat_heldout_date", "ssl_hamming"),
        "landsat_heldout_date_recall10_pretrained_cosine": row("landsat_heldout_date", "pretrained_cosine"),
        "ssl_train_seconds_naip": timing.get("naip"), "ssl_train_seconds_landsat": timing.get("landsat"),
        "main_job_cold_seconds": main_job_s, "bits": bits,
    }
    goals = {}
    for place in ("naip", "landsat", "landsat_heldout_date"):
        b = row(place, "pretrained_cosine")
        goals[place] = {"hamming_goal": round(min(1.5 * b, b + (1 - b) / 2), 4),
                        "two_stage_L50_goal": round(min(2 * b, b + 2 * (1 - b) / 3), 4)}
        h, l50 = row(place, "ssl_hamming"), row(place, "ssl_two_stage_L50")
        goals[place] |= {"hamming_met": None if h is None else bool(h >= goals[place]["hamming_goal"] and
                                                                    ci_low(place, "ssl_hamming") > 0),
                         "two_stage_L50_met": None if l50 is None else bool(l50 >= goals[place]["two_stage_L50_goal"])}
    ucmd, goals["ucmd"], ucmd_sources = ucmd_targets()
    targets |= ucmd
    from dataclasses import asdict

    out = {
        "benchmark": "archive_learning",
        "command": command,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": platform.python_version()},
        "model": None if args.model is None else args.model.name,
        "recipe": asdict(SelfSupConfig()),
        "protocol": {"chips": "64 px at native resolution, whole cells of a grid anchored at each raster's origin, "
                              f"resized to {INPUT_SIZE} px", "match": "lon/lat footprint IoU >= 0.5",
                     "folds": "4 blocks (NAIP 2x2 quadrants, Landsat 4 vertical strips); training reads outside the "
                              "held-out block and a one-chip guard band; guard chips never queried",
                     "database": "every grid chip of every date", "queries": "every held-out-block chip with a match "
                     "at another date", "metric": "tie-aware recall@10 (expected under random order among equal "
                     "distances), pooled over folds, mean over seeds; 95 % interval of the difference (seed-mean per "
                     "query) by footprint bootstrap",
                     "seeds": f"self-supervised seeds {seeds} (augmentation draws and ITQ start); ablations seed "
                              f"{seeds[:1]}; ITQ baseline seed 0; untrained features are deterministic",
                     "ssl": "one model per fold and seed, trained on the fold's training chips only (time pairs of "
                            "footprints seen at two training dates; augmented views as the recipe weights them); "
                            "codes = the fitted head applied "
                            "to the frozen backbone's ONNX features (onnx_check_fold0_seed0 compares with the "
                            "exported encoder end to end); two-stage = the index's ranking (int8 descriptors, "
                            "default weight), shortlist L"},
        "targets": targets, "goals": goals, "places": places,
        "timing_note": "ssl_train_seconds_*: one cold `rshash train --rasters` on all of the place's rasters (every "
                       "block, so an upper bound of a training-blocks run), empty feature cache, RSHASH_THREADS=2",
        "ucmd_sources": ucmd_sources,
        "not_measured": "; ".join(
            [k for k, v in targets.items() if v is None]
            + ([] if main_job_s else ["main_job_cold_seconds (run benchmarks/main_job.py first)"])) or "nothing",
    }
    if args.targets_only:  # everything measured stays as the last run wrote it
        out = previous | {k: out[k] for k in ("targets", "goals", "ucmd_sources", "not_measured")} | {
            "targets_command": targets_command, "targets_date": out["date"]}
    publish(args.out, out, "archive_learning", markdown(out))
    print(json.dumps(targets, indent=1))
    return 0


def markdown(out: dict) -> str:
    t, g = out["targets"], out["goals"]

    def met(flag):
        return "—" if flag is None else ("met" if flag else "**not met**")

    lines = ["## Same place, other date: self-supervised archive models (issue 15)", "",
             f"`{out['command']}` ({out['date']}). {out['protocol']['metric']}; {out['protocol']['folds']}. "
             f"{out['protocol']['ssl']}. Seeds: {out['protocol']['seeds']}.", "",
             "| place | untrained cosine b | Hamming (goal) | CI low of Hamming − b | two-stage L50 (goal) |",
             "|---|---|---|---|---|"]
    for place in ("naip", "landsat", "landsat_heldout_date"):
        rows = out["places"][place]["rows"]
        h, l50 = rows.get("ssl_hamming"), rows.get("ssl_two_stage_L50")
        lines.append(
            f"| {place} | {rows['pretrained_cosine']['recall_at_10']} | "
            + ("—" if h is None else f"{h['recall_at_10']} ± {h.get('recall_at_10_seed_std', 0)} "
               f"({g[place]['hamming_goal']}, {met(g[place]['hamming_met'])})")
            + " | " + ("—" if h is None else str(h["ci95_difference_to_pretrained_cosine"][0]))
            + " | " + ("—" if l50 is None else f"{l50['recall_at_10']} ({g[place]['two_stage_L50_goal']}, "
                                               f"{met(g[place]['two_stage_L50_met'])})") + " |")
    lines += ["", f"Cold `rshash train --rasters` (2 threads, empty cache): NAIP {t['ssl_train_seconds_naip']} s, "
              f"Landsat {t['ssl_train_seconds_landsat']} s (goal ≤ 300 s). {out['timing_note']}. Main job cold: "
              f"{t['main_job_cold_seconds']} s (goal ≤ 600 s).", "",
              "| place | chips | queries | row | recall@10 | recall@1 | median rank | stable / changed | per fold |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, place in out["places"].items():
        for key, r in place["rows"].items():
            lines.append(f"| {name} | {place['chips']} | {place['queries']} | {key} | {r['recall_at_10']} | "
                         f"{r['recall_at_1']} | {r['median_first_match_rank']} | {r['recall_at_10_stable']} / "
                         f"{r['recall_at_10_changed']} | {r['recall_at_10_per_fold']} |")
    ug = g.get("ucmd", {})
    lines += ["", f"UCMD, the labelled default recipe ({out.get('ucmd_sources', '')}):", "",
              "| key | measured | goal | met |", "|---|---|---|---|",
              f"| unseen@unseen Hamming | {t['ucmd_unseen_hamming']} ± {t['ucmd_unseen_hamming_std']} | > untrained "
              f"cosine {t['ucmd_unseen_pretrained_cosine']} + one std | "
              f"{met(ug.get('unseen_hamming_above_pretrained_by_a_std'))} |",
              f"| unseen@unseen two-stage | {t['ucmd_unseen_two_stage']} | >= fine-tuned cosine "
              f"{t['ucmd_unseen_finetuned_cosine']} | {met(ug.get('unseen_two_stage_at_least_finetuned_cosine'))} |",
              f"| protocol A default ranking | {t['ucmd_A_default_ranking']} ± {t['ucmd_A_std']} | >= 0.98 | "
              f"{met(ug.get('A_default_at_least_0.98'))} |",
              f"| A-val default − Hamming | {t['ucmd_Aval_default_minus_hamming']} | >= −{ug.get('Aval_std')} | "
              f"{met(ug.get('Aval_default_minus_hamming_at_least_minus_std'))} |"]
    lines += ["", f"Not measured here: {out['not_measured']}."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
