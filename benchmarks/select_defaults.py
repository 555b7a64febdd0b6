"""Choose the hashing defaults on validation folds only (never on test): loss terms, head, re-rank weight.

    python benchmarks/select_defaults.py [--data DIR] [--bits 64] [--fold A|unseen|both] [--variants a,b,...]

Two folds, both carved from training data only:

* **A-val** (seen classes): protocol A's seed-0 split; the head trains on its train part and
  picks its epoch on val; score = val images querying the train images.
* **validation-unseen** (generalisation): from the 16 seen classes of the unseen-class
  protocol (its 5 test-unseen classes take no part at all), 4 seeded classes are held out;
  fine-tuning and the head see the other 12; score = the 4 held-out classes, 80 % database /
  20 % queries (unseen@unseen) and the same queries against those plus every image of the
  12 training classes (unseen@all).

Every variant is scored Hamming-only and re-ranked at several weights, fixed or gated per query
(:data:`rshash.ranking.GATE_RANK`); the criterion is the mean of A-val and validation-unseen mAP@all,
Hamming and re-ranked (at the variant's best weight). ``constrained`` in the merged file applies issue
15's rule instead: only settings not below the Hamming order by more than one seed std on any fold (the
stds of benchmarks/results/ucmd_hashing.json), then the best mean. Writes
benchmarks/results/select_defaults.json (``--fold`` runs one fold and ``--merge`` combines the two fold
files, so the folds can run in parallel; ``--out`` another name for a partial run, e.g. the gate study:

    python benchmarks/select_defaults.py --fold A --variants "centres + neighbourhood 1 (fine-tuned teacher)" \
        --out benchmarks/results/select_gate.json   # then --fold unseen ..., then --merge --out ...
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from rshash.data.datasets import class_names, load_records, resolve_data_dir
from rshash.evaluation.protocols import (
    RetrievalTask, evaluate, unseen_all_task, unseen_classes, unseen_task, validation_unseen_assignment,
)
from rshash.io_utils import atomic_write_text
from rshash.model import DescriptorHead
from rshash.training.hashing import HashTrainConfig
from rshash.training.pipeline import Setup, TrainOptions, setup

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks/results/select_defaults.json"
WEIGHTS = (0.0, 0.25, 0.5, 0.75, 0.9)
DESCRIPTOR_DIMS = (64, 128)
#: Re-rank gates scored beside the fixed weights (rshash.ranking.GATE_RANK): fraction of the bits.
GATES = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
GATED_WEIGHTS = (0.75, 0.9)

#: Candidate configurations: changes from HashTrainConfig() (the landed default: lossless triplet +
#: quantization + balance + hash centres, LSTM head, 30 epochs).
VARIANTS: dict[str, dict] = {
    "paper (lossless triplet + quant + balance)": {"w_centre": 0.0},
    "centres (landed default)": {},
    "centres + similarity 0.5 (fine-tuned teacher)": {"w_similarity": 0.5, "teacher": "finetuned"},
    "centres + similarity 1 (fine-tuned teacher)": {"w_similarity": 1.0, "teacher": "finetuned"},
    "centres + similarity 2 (fine-tuned teacher)": {"w_similarity": 2.0, "teacher": "finetuned"},
    "centres 0.3 + similarity 1 (fine-tuned teacher)": {"w_centre": 0.3, "w_similarity": 1.0, "teacher": "finetuned"},
    "centres + neighbourhood 1 (fine-tuned teacher)": {"w_neighbour": 1.0, "teacher": "finetuned"},
    "centres + similarity 1, concat+MLP head": {"w_similarity": 1.0, "teacher": "finetuned", "cell": "none"},
    "no centres, similarity 1 (fine-tuned teacher)": {"w_centre": 0.0, "w_similarity": 1.0, "teacher": "finetuned"},
}


def scores(s: Setup, codes: np.ndarray, tasks: dict[str, RetrievalTask], dims: int) -> dict:
    """mAP@all per task: Hamming only, and re-ranked per descriptor size and weight."""
    labels = s.data.labels
    out: dict = {}
    for name, task in tasks.items():
        out[name] = {"hamming": evaluate(codes, labels, task, rerank=False)["map_all"]}
        for d in DESCRIPTOR_DIMS:
            desc = s.descriptors(s.fit_descriptor(DescriptorHead(dims, d)))
            for w in WEIGHTS:
                out[name][f"reranked d{d} w{w}"] = evaluate(codes, labels, task, desc, weight=w)["map_all"]
            for w in GATED_WEIGHTS:
                for g in GATES:
                    out[name][f"reranked d{d} w{w} gate{g}"] = evaluate(codes, labels, task, desc, weight=w,
                                                                       gate=g)["map_all"]
    return out


def fold_setup(fold: str, records, cache_dir: str | None) -> tuple[Setup, dict[str, RetrievalTask], dict]:
    """The setup (fine-tuned on the fold's training classes), the fold's tasks and their description: ``"A"``
    (A-val) or ``"unseen"`` (validation-unseen@unseen and @all)."""
    names = class_names(records)
    test_unseen = unseen_classes(names, 5, 0)
    if fold == "A":
        s = setup(records, TrainOptions(cache_dir=cache_dir))
        d = s.data
        tasks = {"A-val": RetrievalTask("A-val", "val images query the train images", d.val, d.train)}
        about = {"A-val": "protocol A seed-0 split; queries = val (10% of training), database = train"}
        return s, tasks, about
    assignment, val_unseen = validation_unseen_assignment(records, test_unseen)
    s = setup(records, TrainOptions(cache_dir=cache_dir), assignment=assignment)
    d = s.data
    ids = [d.class_names.index(c) for c in val_unseen]
    uu = unseen_task(d.labels, ids, 0)
    ua = unseen_all_task(d.labels, ids, 0)
    train_classes = np.flatnonzero(np.isin(d.labels, d.labels[np.concatenate([d.train, d.val])]))
    ua = replace(ua, database=np.intersect1d(ua.database, np.concatenate([uu.database, train_classes])))
    tasks = {"val-unseen@unseen": uu, "val-unseen@all": ua}
    about = {"classes": val_unseen, "test_unseen_excluded": test_unseen,
             "val-unseen@unseen": uu.description, "val-unseen@all": "the same queries; database = their database "
             "images + every image of the 12 training classes"}
    return s, tasks, about


def run_fold(fold: str, records, args) -> dict:
    s, tasks, about = fold_setup(fold, records, args.cache_dir)
    dims = s.data.bank.tap_dims[-1] // 2
    results: dict = {"about": about, "variants": {}}
    for name, change in VARIANTS.items():
        if args.variants and name not in args.variants:
            continue
        cfg = replace(HashTrainConfig(bits=args.bits), **change)
        t = time.perf_counter()
        head, m = s.train_head(cfg)
        results["variants"][name] = {"config": change, "best_epoch": m["best_epoch"],
                                     "seconds": round(time.perf_counter() - t, 1)} | scores(s, s.codes(head), tasks, dims)
        print(f"[{fold}] {name}: {json.dumps({k: v for k, v in results['variants'][name].items() if k != 'config'})}",
              flush=True)
    return results


def choose(folds: dict) -> dict:
    """The variant and re-rank setting with the best mean of the fold scores (Hamming and re-ranked)."""
    a, u = folds["A"]["variants"], folds["unseen"]["variants"]
    table = {}
    for name in a.keys() & u.keys():
        settings = [k for k in a[name]["A-val"] if k.startswith("reranked")]
        best = max(settings, key=lambda k: np.mean([a[name]["A-val"][k], u[name]["val-unseen@unseen"][k],
                                                    u[name]["val-unseen@all"][k]]))
        parts = {
            "A-val hamming": a[name]["A-val"]["hamming"], "A-val reranked": a[name]["A-val"][best],
            "val-unseen@unseen hamming": u[name]["val-unseen@unseen"]["hamming"],
            "val-unseen@unseen reranked": u[name]["val-unseen@unseen"][best],
            "val-unseen@all reranked": u[name]["val-unseen@all"][best],
        }
        table[name] = {"rerank_setting": best, "criterion": float(np.mean(list(parts.values())))} | parts
    winner = max(table, key=lambda n: table[n]["criterion"])
    return {"criterion": "mean of A-val (Hamming, re-ranked), val-unseen@unseen (Hamming, re-ranked) and "
                         "val-unseen@all (re-ranked) mAP@all; re-rank setting per variant = the best mean over the "
                         "three tasks", "table": table, "chosen": winner, "chosen_config": folds["A"]["variants"][winner]["config"],
            "chosen_rerank": table[winner]["rerank_setting"]}


def choose_constrained(folds: dict, stds: dict[str, float]) -> dict:
    """Issue 15's rule per variant: among the re-rank settings whose mAP is not below the Hamming order by more than
    one seed std on any fold (``stds`` per task), the best mean over the three tasks."""
    a, u = folds["A"]["variants"], folds["unseen"]["variants"]
    tasks = (("A-val", a), ("val-unseen@unseen", u), ("val-unseen@all", u))
    table = {}
    for name in a.keys() & u.keys():
        settings = [k for k in a[name]["A-val"] if k.startswith("reranked")]
        rows = {}
        for k in settings:
            gaps = {t: f[name][t][k] - f[name][t]["hamming"] for t, f in tasks}
            rows[k] = {"mean": float(np.mean([f[name][t][k] for t, f in tasks])),
                       "ok": all(gaps[t] >= -stds[t] for t in gaps)} | {f"{t} minus hamming": g for t, g in gaps.items()}
        ok = [k for k in rows if rows[k]["ok"]]
        best = max(ok, key=lambda k: rows[k]["mean"]) if ok else None
        table[name] = {"chosen": best, "chosen_row": rows.get(best), "hamming_mean": float(np.mean(
            [f[name][t]["hamming"] for t, f in tasks])), "settings_meeting_the_constraint": len(ok), "rows": rows}
    return {"rule": choose_constrained.__doc__.split("\n\n")[0].replace("\n    ", " "), "stds": stds, "table": table}


def _seed_stds() -> dict[str, float]:
    """One seed standard deviation of the Hamming order per task, from ucmd_hashing.json (protocol A, unseen)."""
    r = json.loads((ROOT / "benchmarks/results/ucmd_hashing.json").read_text())
    unseen = r["unseen"]["map_all"]["ours (Hamming)"]
    return {"A-val": r["protocol_A"].get("seeds_default", r["protocol_A"].get("seeds_64"))["hamming"]["std"], "val-unseen@unseen": unseen["unseen_unseen"]["std"],
            "val-unseen@all": unseen["unseen_all"]["std"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data")
    p.add_argument("--cache-dir")
    p.add_argument("--bits", type=int, default=64)
    p.add_argument("--fold", choices=("A", "unseen", "both"), default="both")
    p.add_argument("--variants", type=lambda x: x.split(";"), help="';'-separated names (default: all)")
    p.add_argument("--merge", action="store_true", help="combine the per-fold files into the results file")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    if args.merge:
        folds = {f: json.loads(args.out.with_suffix(f".{f}.json").read_text()) for f in ("A", "unseen")}
        results = {f: v["results"] for f, v in folds.items()}
        result = {"command": "python benchmarks/select_defaults.py --fold A; ... --fold unseen; ... --merge"
                             + ("" if args.out == OUT else f" (--out {args.out.name})"),
                  "folds": folds, "selection": choose(results),
                  "constrained": choose_constrained(results, _seed_stds())}
        atomic_write_text(args.out, json.dumps(result, indent=1))
        print(json.dumps(result["selection"]["table"], indent=1), "\nchosen:", result["selection"]["chosen"],
              result["selection"]["chosen_rerank"])
        return 0
    torch.set_num_threads(1)
    records = load_records(resolve_data_dir(args.data))
    t0 = time.perf_counter()
    for fold in (("A", "unseen") if args.fold == "both" else (args.fold,)):
        results = run_fold(fold, records, args)
        payload = {"command": "python benchmarks/select_defaults.py " + " ".join(sys.argv[1:] if argv is None else argv),
                   "machine": f"{platform.platform()}, python {platform.python_version()}, torch {torch.__version__}, 1 thread",
                   "data": "UC Merced Land Use (21 classes x 100 images); view 0 from cached features",
                   "bits": args.bits, "base_config": asdict(HashTrainConfig(bits=args.bits)),
                   "seconds": round(time.perf_counter() - t0, 1), "results": results}
        atomic_write_text(args.out.with_suffix(f".{fold}.json"), json.dumps(payload, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
