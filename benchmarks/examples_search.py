"""Find every place like these (issue 17): examples with yes and no on UCMD unseen classes, and the index out as
GeoParquet at 10^6 items.

Part ``user``: the simulated user of :mod:`rshash.evaluation.simulated_user` (1 positive; 5 positives; 5
positives + 5 negatives; two rounds of yes/no marks; every ranking the index's relevance-feedback ranking) on
the 5 test-unseen UCMD classes with the unseen-protocol model of the default labelled recipe (128 bits, trained
on the 16 seen classes, one head per seed 0-2; database/query split per seed; 5 example draws per class and
seed), on unseen@unseen (database: the unseen classes' database images) and unseen@all (plus every seen-class
image). Codes and descriptors come from the cached backbone features (view 0: the image as stored) through the
trained head, as in ucmd_hashing.py. The feedback defaults (``rshash.feedback``: the positives' re-rank weight,
the classifier's schedule, the background weight, the find-all threshold) are chosen on the validation-unseen
fold (4 of the seen classes held out of a 12-class model, as in select_defaults.py), never on the test classes:
the JSON shows every candidate there, what validation chose and the defaults used on test.

Part ``geoparquet``: an index of N synthetic raster chips (default 10^6: clustered codes at the default recipe's
length, 128 bits; random int8 128-d descriptors; square lon/lat footprints on a grid over 10 dated rasters; built
through the index's own store and chip tables) is exported with ``Index.export_geoparquet`` (the ``rshash export --geoparquet`` path);
reported: write time, file size, and the time pyarrow takes to read it back whole (every column) and with a
bbox filter on the covering column (a 1 % box).

    python benchmarks/examples_search.py --cache-dir DIR               # both parts
    python benchmarks/examples_search.py --parts geoparquet --items 100000   # quick check

Writes benchmarks/results/examples_search.json and its section of docs/RESULTS.md; keys of parts not run (or of
targets not measured yet) are null.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_doc import publish  # noqa: E402

from rshash.training.hashing import DEFAULT_BITS  # noqa: E402 - the code length of the default recipe

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "examples_search.json"
BITS, DIMS, RASTERS = DEFAULT_BITS, 128, 10
READ_GOAL_S = 5.0
STEP = 0.001  # degrees per synthetic chip (about 100 m)


def synthetic_chip_index(path: Path, n: int, model_dir: Path, seed: int = 0) -> None:
    """An index of ``n`` chips over ``RASTERS`` dated rasters, through the store and the chip tables."""
    from rshash.geo import tables
    from rshash.index import Index
    from rshash.index.store import NewImage
    from rshash.index.synthetic import ClusteredCodes
    from rshash.progress import progress_bar

    Index.create(path, model_dir).close()
    index = Index.open(path)
    store = index._store  # benchmark set-up: rows straight into the store, as the ingest pipeline commits them
    rng = np.random.default_rng(seed)
    codes = ClusteredCodes(BITS, seed=seed)
    per_raster = -(-n // RASTERS)
    side = int(np.ceil(np.sqrt(per_raster)))
    step = STEP

    def add_raster(conn, r: int) -> int:
        tables.create_tables(conn)
        info = {"path": f"/synthetic/raster_{r:02d}_{2000 + r}0601.tif", "sha256": f"{r:064x}", "crs": "EPSG:4326",
                "transform": [step, 0, -100.0, 0, -step, 40.0], "width": side, "height": side, "count": 3,
                "bands": [1, 2, 3], "dtype": "uint8", "stretch": {"kind": "none"}, "gsd": 100.0}
        raster_id = tables.insert_raster(conn, info, {"tile": 1, "gsd": "native", "overlap": 0.0})
        tables.set_raster_time(conn, raster_id, f"{2000 + r}-06-01T00:00:00Z", None)
        return raster_id

    done = 0
    with progress_bar(total=n, desc="synthetic index", unit="chip") as bar:
        for r in range(RASTERS):
            raster_id = store.run(lambda conn, r=r: add_raster(conn, r), write=True)
            count = min(per_raster, n - done)
            for start in range(0, count, 50_000):
                m = min(50_000, count - start)
                cells = np.arange(start, start + m)
                cols, rows = cells % side, cells // side
                packed = codes.sample(m)
                desc = rng.integers(-127, 128, size=(m, DIMS), dtype=np.int8)
                new = [NewImage(f"/synthetic/raster_{r:02d}.tif#{c},{w},1,1", None, 1, 1, "0" * 64, "2026-01-01",
                                packed[i].tobytes(), desc[i].tobytes()) for i, (c, w) in enumerate(zip(cols, rows))]
                metas = []
                for c, w in zip(cols.tolist(), rows.tolist()):
                    w0, n0 = -100.0 + c * step, 40.0 - w * step
                    ring = [[w0, n0 - step], [w0 + step, n0 - step], [w0 + step, n0], [w0, n0], [w0, n0 - step]]
                    metas.append({"window": (c, w, 1, 1), "bounds": (w0, n0 - step, w0 + step, n0), "footprint": ring,
                                  "centroid": (w0 + step / 2, n0 - step / 2), "bbox": (w0, n0 - step, w0 + step, n0),
                                  "valid_fraction": 1.0})
                store.add(new, on_insert=lambda conn, ids, metas=metas, raster_id=raster_id: tables.insert_chips(
                    conn, raster_id, zip(ids, metas)))
                bar.update(m)
            done += count
    index.close()


HALVES = (5, 10, 20)
BACKGROUND_WEIGHTS = (0.02, 0.2)
DIFFUSION_KS = (10, 20, 30, 50)
DIFFUSION_ALPHAS = (0.8, 0.9, 0.95)
DIFFUSION_NEGATIVE_WEIGHTS = (0.0, 1.0)
THRESHOLDS = tuple(round(-3.0 + 0.25 * i, 2) for i in range(13))  # -3.0 .. 0.0
SEEDS = (0, 1, 2)
DRAWS = 5
FEEDBACK_CONDITIONS = ("1pos", "5pos", "5pos_5neg", "refined_2rounds")


def _vectors(s, seed: int):
    """Packed codes and int8 descriptors of every image from a head of the default recipe trained on ``s``."""
    from rshash.ranking import quantize_descriptors
    from rshash.training.hashing import default_recipe

    _, codes, desc = s.trained(default_recipe(BITS, seed), DIMS)
    return np.packbits(codes, axis=1), quantize_descriptors(desc)


def _simulate_tasks(codes, desc, labels, tasks: dict, classes: list[int], seed: int, draws: int, weight: float,
                    half: int, thresholds=THRESHOLDS, **options) -> dict:
    """Mean (AP, P@50) per task and condition over classes and example draws, and find-all (precision, recall,
    F1) per threshold after two rounds."""
    from rshash.evaluation.simulated_user import simulate, table_of

    table = table_of(codes, desc)
    out = {}
    for name, task in tasks.items():
        runs = []
        for draw in range(draws):
            for c in classes:
                pool = np.intersect1d(task.queries, np.flatnonzero(labels == c))
                rng = np.random.default_rng([seed, draw, int(c)])
                examples = [int(i) for i in rng.choice(pool, size=5, replace=False)]
                runs.append(simulate(table, task.database, labels == c, examples, BITS, weight, half, thresholds,
                                     **options))
        out[name] = {cond: {"map_all": float(np.mean([r[cond][0] for r in runs])),
                            "p_at_50": float(np.mean([r[cond][1] for r in runs]))} for cond in FEEDBACK_CONDITIONS}
        out[name]["find_all"] = {str(t): dict(zip(("precision", "recall", "f1"), np.mean(
            [r["find_all"][t] for r in runs], axis=0).round(4).tolist())) for t in thresholds}
        out[name]["same_items"] = {c: float(np.mean([r["same_items"][c][0] for r in runs]))
                                   for c in ("5pos", "5pos_5neg", "refined_2rounds")}
    return out


def _monotone(task_result: dict) -> bool:
    values = [task_result[c]["map_all"] for c in ("5pos", "5pos_5neg", "refined_2rounds")]
    return all(b >= a for a, b in zip(values, values[1:]))


def user_part(cache_dir: str | None, seeds, draws: int, validation_only: bool = False) -> dict:
    from dataclasses import asdict, replace

    from rshash.data.datasets import class_names, load_records, resolve_data_dir
    from rshash.evaluation.protocols import (unseen_all_task, unseen_assignment, unseen_classes, unseen_task,
                                             validation_unseen_assignment)
    from rshash.diffusion import DEFAULT_DIFFUSION, Diffusion
    from rshash.feedback import FEEDBACK_BACKGROUND_WEIGHT, FEEDBACK_HALF, FEEDBACK_WEIGHT, FIND_ALL_THRESHOLD
    from rshash.model_config import ModelConfig, model_rerank_weight
    from rshash.training.pipeline import TrainOptions, setup

    model_weight = model_rerank_weight(ModelConfig(class_names=["labelled"]))  # a labelled model's own weight
    records = load_records(resolve_data_dir(None))
    names = class_names(records)
    unseen = unseen_classes(names, 5, 0)
    started = time.perf_counter()
    # validation: the feedback settings, on classes held out of the seen ones
    assignment, val_unseen = validation_unseen_assignment(records, unseen)
    s = setup(records, TrainOptions(cache_dir=cache_dir), assignment=assignment)
    d = s.data
    ids = [d.class_names.index(c) for c in val_unseen]
    uu = unseen_task(d.labels, ids, 0)
    train_classes = np.flatnonzero(np.isin(d.labels, d.labels[np.concatenate([d.train, d.val])]))
    ua = replace(unseen_all_task(d.labels, ids, 0),
                 database=np.concatenate([uu.database, train_classes]))
    codes, desc = _vectors(s, 0)
    selection = {}
    val_tasks = {"val-unseen@unseen": uu, "val-unseen@all": ua}

    def validate(key: str, w: float, half: int, bgw: float, diffusion) -> None:
        r = _simulate_tasks(codes, desc, d.labels, val_tasks, ids, 0, draws, w, half, background_weight=bgw,
                            diffusion=diffusion)
        selection[key] = r | {
            "weight": w, "half": half, "background_weight": bgw,
            "diffusion": None if diffusion is None else asdict(diffusion),
            "mean_positives_only": float(np.mean([r[t][c]["map_all"] for t in r for c in ("1pos", "5pos")])),
            "mean_refined": float(np.mean([r[t]["refined_2rounds"]["map_all"] for t in r])),
            "mean_all": float(np.mean([r[t][c]["map_all"] for t in r for c in FEEDBACK_CONDITIONS])),
            "monotone": all(_monotone(r[t]) for t in r)}
        print(f"validation {key}: " + json.dumps({t: {c: round(r[t][c]["map_all"], 4)
                                                      for c in FEEDBACK_CONDITIONS} for t in r}), flush=True)

    # stage 1, without diffusion: the positives' weight by the searches without marks (they depend on it alone),
    # then the classifier's schedule and background weight by refinement
    for w in sorted({model_weight, FEEDBACK_WEIGHT}):
        for half in HALVES:
            for bgw in BACKGROUND_WEIGHTS:
                validate(f"weight {w} half {half} background_weight {bgw}", w, half, bgw, None)
    w_best = selection[max(selection, key=lambda k: selection[k]["mean_positives_only"])]["weight"]
    plain = max((k for k in selection if selection[k]["weight"] == w_best), key=lambda k: selection[k]["mean_refined"])
    # stage 2: diffusion (rshash.diffusion) at that weight and background weight, each schedule again; kept only
    # if not below the plain ranking on any condition of either task, then the best mean over all of them
    bgw_best = selection[plain]["background_weight"]
    for k in DIFFUSION_KS:
        for alpha in DIFFUSION_ALPHAS:
            for neg_w in DIFFUSION_NEGATIVE_WEIGHTS:
                for half in HALVES:
                    diffusion = Diffusion(k, alpha, neg_w)
                    validate(f"weight {w_best} half {half} background_weight {bgw_best} diffusion {diffusion.label}",
                             w_best, half, bgw_best, diffusion)
    value = lambda key: [selection[key][t][c]["map_all"] for t in val_tasks for c in FEEDBACK_CONDITIONS]  # noqa: E731
    safe = [key for key in selection if selection[key]["diffusion"] is not None
            and all(a >= b for a, b in zip(value(key), value(plain)))]
    best = max(safe, key=lambda key: selection[key]["mean_all"]) if safe else plain
    chosen = {k: selection[best][k] for k in ("weight", "half", "background_weight", "diffusion")}
    f1 = selection[best]["val-unseen@all"]["find_all"]
    chosen_threshold = float(max(f1, key=lambda t: f1[t]["f1"]))
    defaults = {"weight": FEEDBACK_WEIGHT, "half": FEEDBACK_HALF, "background_weight": FEEDBACK_BACKGROUND_WEIGHT,
                "diffusion": asdict(DEFAULT_DIFFUSION)}
    print(f"validation chose {chosen} (defaults {defaults}), find-all threshold {chosen_threshold} "
          f"(default {FIND_ALL_THRESHOLD})", flush=True)
    if validation_only:
        return {"chosen": chosen, "chosen_find_all_threshold": chosen_threshold, "results": selection,
                "plain": plain, "safe": safe}
    # test: the 5 test-unseen classes, the default schedule
    s = setup(records, TrainOptions(cache_dir=cache_dir), assignment=unseen_assignment(records, unseen, 0))
    d = s.data
    ids = [d.class_names.index(c) for c in unseen]
    per_seed, plain_per_seed = [], []
    plain_setting = selection[plain]
    for seed in seeds:
        codes, desc = _vectors(s, seed)
        tasks = {"unseen_unseen": unseen_task(d.labels, ids, seed), "unseen_all": unseen_all_task(d.labels, ids, seed)}
        per_seed.append(_simulate_tasks(codes, desc, d.labels, tasks, ids, seed, draws, FEEDBACK_WEIGHT,
                                        FEEDBACK_HALF, (FIND_ALL_THRESHOLD,), diffusion=DEFAULT_DIFFUSION))
        print(f"test seed {seed}: {json.dumps(per_seed[-1])}", flush=True)
        # the ablation: validation's best setting without diffusion (the ranking before it landed)
        plain_per_seed.append(_simulate_tasks(codes, desc, d.labels, tasks, ids, seed, draws, plain_setting["weight"],
                                              plain_setting["half"], (FIND_ALL_THRESHOLD,),
                                              background_weight=plain_setting["background_weight"], diffusion=None))
    same_items = {t: {c: round(float(np.mean([r[t]["same_items"][c] for r in per_seed])), 4)
                      for c in ("5pos", "5pos_5neg", "refined_2rounds")} for t in ("unseen_unseen", "unseen_all")}
    without_diffusion = {t: {c: round(float(np.mean([r[t][c]["map_all"] for r in plain_per_seed])), 4)
                             for c in FEEDBACK_CONDITIONS} for t in ("unseen_unseen", "unseen_all")}
    test = {t: {c: {m: {"mean": float(np.mean([r[t][c][m] for r in per_seed])),
                        "std": float(np.std([r[t][c][m] for r in per_seed])),
                        "per_seed": [r[t][c][m] for r in per_seed]} for m in ("map_all", "p_at_50")}
                for c in FEEDBACK_CONDITIONS} for t in ("unseen_unseen", "unseen_all")}
    find = {t: {m: float(np.mean([r[t]["find_all"][str(FIND_ALL_THRESHOLD)][m] for r in per_seed]))
                for m in ("precision", "recall", "f1")} for t in ("unseen_unseen", "unseen_all")}
    return {"validation": {"classes": val_unseen, "results": selection, "chosen": chosen,
                           "rule": "stage 1, without diffusion: the positives' re-rank weight (a labelled model's "
                           "own or the examples default) with the best mean 1pos and 5pos mAP@all over "
                           "val-unseen@unseen and val-unseen@all (those searches have no marks and depend on it "
                           "alone); then, with it, the setting (classifier schedule half; background weight) with "
                           "the best mean refined_2rounds mAP@all over the two tasks ('plain'). Stage 2: diffusion "
                           "(k, alpha, negative weight) with each schedule half at that weight and background "
                           "weight; a setting is 'safe' if no condition of either task is below plain's; the safe "
                           "setting with the best mean mAP@all over every condition of both tasks, else plain "
                           "(each step's monotonicity reported, not required: removing the marked, easiest "
                           "relevant items makes each later condition harder). Then the find-all threshold with "
                           "the best F1 on val-unseen@all after two rounds at the chosen setting",
                           "plain": plain, "safe": safe, "chosen_find_all_threshold": chosen_threshold},
            "defaults": defaults, "default_is_chosen": chosen == defaults, "default_half": FEEDBACK_HALF,
            "default_find_all_threshold": FIND_ALL_THRESHOLD,
            "default_threshold_is_chosen": chosen_threshold == FIND_ALL_THRESHOLD, "find_all": find,
            "test_classes": unseen, "seeds": list(seeds), "draws": draws,
            "test": test, "test_without_diffusion": {"setting": plain, "map_all_mean": without_diffusion},
            "seconds": round(time.perf_counter() - started, 1),
            "monotone_on_test": {t: _monotone({c: {"map_all": test[t][c]["map_all"]["mean"]}
                                               for c in FEEDBACK_CONDITIONS}) for t in test},
            "same_items_on_test": same_items,
            "monotone_same_items_on_test": {t: _monotone({c: {"map_all": v} for c, v in same_items[t].items()})
                                            for t in same_items}}


REFINE_ITEMS = 100_000
REFINE_REQUESTS = 60
REFINE_GOAL_MS = 100.0


def refine_part(work: Path) -> dict:
    """Refinement over HTTP on an index of 10^5 synthetic chips: ``rshash serve`` in its own process, one client;
    each request 5 positive and 5 negative ids (drawn anew), k=100: every item is a candidate (an index of at
    most 10^5 is scored whole), a logistic regression is fitted on the marks, every item scored, the top 100 kept
    as places. Client wall time per request (HTTP included) and the server's own ``query_ms``."""
    import httpx
    from serve_load import Server

    from rshash.model import HashingModel, ModelConfig
    from rshash.model_dir import save_model_dir

    save_model_dir(work / "model", HashingModel(ModelConfig(bits=BITS, descriptor_dims=DIMS)))
    synthetic_chip_index(work / "index", REFINE_ITEMS, work / "model", seed=1)
    server = Server(work / "index", None, 1)
    rng = np.random.default_rng(0)
    wall, server_ms = [], []
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            for i in range(REFINE_REQUESTS + 5):
                ids = rng.choice(np.arange(1, REFINE_ITEMS + 1), size=10, replace=False).tolist()
                params = [("id", v) for v in ids[:5]] + [("not_id", v) for v in ids[5:]] + [("k", 100)]
                started = time.perf_counter()
                r = http.get("/api/geo/search", params=params)
                elapsed = (time.perf_counter() - started) * 1000
                r.raise_for_status()
                assert r.json()["count"] == 100
                if i >= 5:  # the first requests warm the server (tables, imports)
                    wall.append(elapsed)
                    server_ms.append(r.json()["query_ms"])
    finally:
        server.stop()
    return {"items": REFINE_ITEMS, "requests": REFINE_REQUESTS, "positives": 5, "negatives": 5, "k": 100,
            "client_ms_p50": round(float(np.median(wall)), 2), "client_ms_p90": round(float(np.percentile(wall, 90)), 2),
            "server_query_ms_p50": round(float(np.median(server_ms)), 2),
            "note": "one rshash serve worker in its own process, one client in this one, on the same 2 cores; "
                    "5 warm-up requests not counted"}


def geoparquet_part(n: int, work: Path) -> dict:
    import pyarrow.compute as pc
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    from rshash.index import Index
    from rshash.model import HashingModel, ModelConfig
    from rshash.model_dir import save_model_dir

    save_model_dir(work / "model", HashingModel(ModelConfig(bits=BITS, descriptor_dims=DIMS)))
    started = time.perf_counter()
    synthetic_chip_index(work / "index", n, work / "model")
    build_s = time.perf_counter() - started
    out = work / "index.parquet"
    with Index.open(work / "index") as index:
        started = time.perf_counter()
        summary = index.export_geoparquet(out)
        write_s = time.perf_counter() - started
    reads = []
    for _ in range(3):
        started = time.perf_counter()
        table = pq.read_table(out)
        reads.append(time.perf_counter() - started)
        assert table.num_rows == n
        del table
    extent = int(np.ceil(np.sqrt(-(-n // RASTERS)))) * STEP  # every raster covers the same square
    box = (-100.0, 40.0 - 0.1 * extent, -100.0 + 0.1 * extent, 40.0)  # 1 % of it
    f = (pc.field("bbox", "xmin") <= box[2]) & (pc.field("bbox", "xmax") >= box[0]) \
        & (pc.field("bbox", "ymin") <= box[3]) & (pc.field("bbox", "ymax") >= box[1])
    started = time.perf_counter()
    filtered = ds.dataset(out).to_table(filter=f)
    filtered_s = time.perf_counter() - started
    return {
        "items": n, "rasters": RASTERS, "bits": BITS, "descriptor_dims": DIMS, "build_index_s": round(build_s, 1),
        "write_s": round(write_s, 2), "bytes": summary["bytes"], "mb": round(summary["bytes"] / 1e6, 1),
        "read_s_median_of_3": round(float(np.median(reads)), 3), "read_s_runs": [round(r, 3) for r in reads],
        "bbox_filtered_read_s": round(filtered_s, 3), "bbox_filtered_rows": filtered.num_rows,
        "bbox": [round(v, 6) for v in box],
        "read_note": "pyarrow.parquet.read_table of every column (warm page cache: the file was just written); "
                     "the bbox read filters on the covering column with pyarrow.dataset",
    }


def markdown(out: dict) -> str:
    t, g, u = out["targets"], out.get("geoparquet") or {}, out.get("user") or {}
    lines = ["## Find every place like these (issue 17)", "", f"`{out['command']}` ({out['date']}, {out['machine']})", ""]
    if u:
        lines += [f"Simulated user on the {len(u['test_classes'])} test-unseen UCMD classes ({', '.join(u['test_classes'])}), "
                  f"seeds {u['seeds']}, {u['draws']} example draws per class and seed; mAP@all (± seed std) / "
                  f"precision@50. Defaults {u['defaults']} (validation chose {u['validation']['chosen']}).", "",
                  "| condition | unseen@unseen mAP | P@50 | unseen@all mAP | P@50 |", "|---|---|---|---|---|"]
        for c in FEEDBACK_CONDITIONS:
            cells = []
            for task in ("unseen_unseen", "unseen_all"):
                r = u["test"][task][c]
                cells += [f"{r['map_all']['mean']:.4f} ± {r['map_all']['std']:.4f}", f"{r['p_at_50']['mean']:.4f}"]
            lines.append(f"| {c} | " + " | ".join(cells) + " |")
        lines += ["", f"Targets: unseen@unseen after two rounds >= 0.95: {t['unseen_map_refined_2rounds']:.4f} "
                  f"({'met' if t['unseen_map_refined_2rounds'] >= 0.95 else '**not met**'}); unseen@all after two "
                  f"rounds >= 0.85: {t['unseen_all_map_refined_2rounds']:.4f} "
                  f"({'met' if t['unseen_all_map_refined_2rounds'] >= 0.85 else '**not met**'}); each step not below "
                  f"the previous: {u['monotone_on_test']} (scored on the same items, those left after the two "
                  f"rounds: {u.get('same_items_on_test')}, monotone {u.get('monotone_same_items_on_test')}). "
                  f"Find all at the default threshold "
                  f"{u['default_find_all_threshold']} (validation chose {u['validation']['chosen_find_all_threshold']}) "
                  f"on unseen@all after two rounds: precision {u['find_all']['unseen_all']['precision']:.3f}, recall "
                  f"{u['find_all']['unseen_all']['recall']:.3f}, F1 {u['find_all']['unseen_all']['f1']:.3f}.", ""]
        plain = u.get("test_without_diffusion")
        if plain:
            m = plain["map_all_mean"]
            lines += [f"Ablation, the same test without diffusion (validation's best plain setting: {plain['setting']}): "
                      "mAP@all unseen@unseen " + ", ".join(f"{c} {m['unseen_unseen'][c]:.4f}" for c in FEEDBACK_CONDITIONS)
                      + "; unseen@all " + ", ".join(f"{c} {m['unseen_all'][c]:.4f}" for c in FEEDBACK_CONDITIONS)
                      + ".", ""]
    r = out.get("refine") or {}
    if r:
        lines += [f"Refinement over HTTP on {r['items']:,} synthetic chips ({r['positives']} yes, {r['negatives']} no, "
                  f"every item scored, top {r['k']}): p50 {r['client_ms_p50']} ms client side (goal < {REFINE_GOAL_MS}: "
                  f"{'met' if r['client_ms_p50'] < REFINE_GOAL_MS else '**not met**'}), p90 {r['client_ms_p90']} ms, "
                  f"server {r['server_query_ms_p50']} ms; {r['note']}.", ""]
    if g:
        lines += [f"GeoParquet export of {g['items']:,} synthetic chips ({g['bits']}-bit codes, {g['descriptor_dims']}-d "
                  f"int8 descriptors, footprints, dates, windows): write {g['write_s']} s, {g['mb']} MB; read back "
                  f"whole with pyarrow {g['read_s_median_of_3']} s (median of 3; goal < {READ_GOAL_S} s: "
                  f"{'met' if g['read_s_median_of_3'] < READ_GOAL_S else '**not met**'}); bbox-filtered read "
                  f"{g['bbox_filtered_read_s']} s ({g['bbox_filtered_rows']:,} rows).", ""]
    missing = [k for k, v in t.items() if v is None]
    lines.append("Not measured yet: " + (", ".join(missing) if missing else "nothing") + ".")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="user,refine,geoparquet",
                        help="comma-separated: user, refine, geoparquet; or validation alone (prints the defaults "
                             "validation chooses, writes nothing)")
    parser.add_argument("--cache-dir", help="feature cache (RSHASH_CACHE layout) for the user part")
    parser.add_argument("--draws", type=int, default=DRAWS, help="example draws per class and seed")
    parser.add_argument("--items", type=int, default=1_000_000, help="items in the exported index")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--resume", action="store_true", help="keep the existing JSON's parts that this run skips "
                        "(e.g. the timed parts run alone on an idle machine)")
    parser.add_argument("--render-only", action="store_true", help="rewrite the docs section from the existing JSON")
    args = parser.parse_args(argv)
    if args.render_only:
        from results_doc import write_section

        write_section("examples_search", markdown(json.loads(args.out.read_text())))
        return 0
    parts = set(args.parts.split(","))
    if parts == {"validation"}:
        user_part(args.cache_dir, SEEDS, args.draws, validation_only=True)
        return 0
    user = user_part(args.cache_dir, SEEDS, args.draws) if "user" in parts else None
    geo = refine = None
    if "refine" in parts:
        with tempfile.TemporaryDirectory(prefix="examples-refine-") as tmp:
            refine = refine_part(Path(tmp))
    if "geoparquet" in parts:
        with tempfile.TemporaryDirectory(prefix="examples-search-") as tmp:
            geo = geoparquet_part(args.items, Path(tmp))
    previous = json.loads(args.out.read_text()) if args.resume and args.out.is_file() else {}
    user = user if user is not None else previous.get("user")
    refine = refine if refine is not None else previous.get("refine")
    geo = geo if geo is not None else previous.get("geoparquet")
    commands = previous.get("commands", []) if args.resume else []
    targets = dict.fromkeys(("unseen_map_1pos", "unseen_map_5pos", "unseen_map_5pos_5neg",
                             "unseen_map_refined_2rounds", "unseen_all_map_1pos", "unseen_all_map_refined_2rounds",
                             "find_all_f1_unseen_all", "refine_ms_p50_1e5"))
    if user is not None:
        m = lambda task, cond: round(user["test"][task][cond]["map_all"]["mean"], 4)  # noqa: E731
        targets |= {"unseen_map_1pos": m("unseen_unseen", "1pos"), "unseen_map_5pos": m("unseen_unseen", "5pos"),
                    "unseen_map_5pos_5neg": m("unseen_unseen", "5pos_5neg"),
                    "unseen_map_refined_2rounds": m("unseen_unseen", "refined_2rounds"),
                    "unseen_all_map_1pos": m("unseen_all", "1pos"),
                    "unseen_all_map_refined_2rounds": m("unseen_all", "refined_2rounds"),
                    "find_all_f1_unseen_all": round(user["find_all"]["unseen_all"]["f1"], 4)}
    if refine is not None:
        targets["refine_ms_p50_1e5"] = refine["client_ms_p50"]
    scale = geo is not None and geo["items"] == 1_000_000
    targets |= {"geoparquet_write_s_1e6": geo["write_s"] if scale else None,
                "geoparquet_read_s_1e6": geo["read_s_median_of_3"] if scale else None,
                "geoparquet_mb_1e6": geo["mb"] if scale else None}
    out = {
        "benchmark": "examples_search",
        "command": "python benchmarks/examples_search.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "commands": commands + ["python benchmarks/examples_search.py " + " ".join(sys.argv[1:] if argv is None else argv)],
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "user": user, "refine": refine, "geoparquet": geo, "targets": targets,
        "goals": {"refine_ms_p50_1e5": f"< {REFINE_GOAL_MS}", "unseen_map_refined_2rounds": ">= 0.95", "unseen_all_map_refined_2rounds": ">= 0.85",
                  "steps": "each condition not below the previous", "geoparquet_read_s_1e6": f"< {READ_GOAL_S}"},
    }
    publish(args.out, out, "examples_search", markdown(out))
    print(json.dumps(targets, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
