"""Choose the labelled recipe's hashing head on the validation folds: the LSTM head trained with the losses (the
landed default) against the closed-form learned whitening of the fine-tuned last level (``cell="whiten"``).

    python benchmarks/select_whitening.py [--data DIR] [--cache-dir DIR] [--fold A|unseen|both] [--seeds 0,1,2] [--resume]
    python benchmarks/select_whitening.py --merge

The folds are select_defaults.py's (A-val: protocol A's seed-0 split, val queries the train images;
validation-unseen: 4 seen classes held out from fine-tuning and head, @unseen and @all; the 5 test-unseen
classes take no part). Per variant and seed: mAP@all of the Hamming order and of the default ranking (the
index's two-stage re-rank at a labelled model's weight, :data:`rshash.ranking.LABELLED_WEIGHT`), and at weight
0.9. The whitening seeds draw the same-class pairs and ITQ's start; the LSTM seeds its initialisation and batches.
``--weights`` then ranks the chosen head at re-rank weights 0-0.9 on both folds and picks its weight by the same
rule (``rshash.ranking.WHITENED_LABELLED_WEIGHT``). Selection (``--merge``), issue 15's rule: the variants whose default ranking is not below their Hamming order by
more than one seed std on any task, then the best mean of the default ranking over the three tasks. Writes
benchmarks/results/select_whitening.json (``--fold`` writes ``select_whitening.<fold>.json``, so the folds can
run in parallel, one core each).
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

from rshash.data.datasets import load_records, resolve_data_dir
from rshash.evaluation.protocols import evaluate
from rshash.hashing.head import WHITEN
from rshash.io_utils import atomic_write_text
from rshash.ranking import LABELLED_WEIGHT
from rshash.training.hashing import HashTrainConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from select_defaults import fold_setup  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks/results/select_whitening.json"
TASKS = ("A-val", "val-unseen@unseen", "val-unseen@all")


def variants() -> dict[str, HashTrainConfig]:
    out = {"lstm 64 (landed default)": HashTrainConfig(bits=64)}
    for bits in (64, 128):
        for eps in (0.03, 0.1, 0.3, 1.0):
            for aug in (0.1, 1.0):
                out[f"whiten {bits} eps {eps} aug {aug}"] = HashTrainConfig(bits=bits, cell=WHITEN, whiten_eps=eps,
                                                                            whiten_aug_weight=aug)
    return out


def run_fold(fold: str, records, args) -> dict:
    s, tasks, about = fold_setup(fold, records, args.cache_dir)
    labels = s.data.labels
    out: dict = {"about": about, "variants": {}}
    earlier = OUT.with_suffix(f".{fold}.json")
    if args.resume and earlier.is_file():
        out["variants"] = json.loads(earlier.read_text())["results"]["variants"]
    for name, cfg in variants().items():
        if name in out["variants"]:
            continue
        rows = []
        for seed in args.seeds:
            t = time.perf_counter()
            _, codes, desc = s.trained(replace(cfg, seed=seed))
            row = {"seed": seed, "seconds": round(time.perf_counter() - t, 1)}
            for tn, task in tasks.items():
                row[tn] = {"hamming": evaluate(codes, labels, task, rerank=False)["map_all"],
                           "default": evaluate(codes, labels, task, desc, weight=LABELLED_WEIGHT)["map_all"],
                           "w0.9": evaluate(codes, labels, task, desc, weight=0.9)["map_all"]}
            rows.append(row)
            print(f"[{fold}] {name} seed {seed}: {json.dumps(row)}", flush=True)
        out["variants"][name] = {"config": {k: v for k, v in asdict(cfg).items() if asdict(HashTrainConfig(bits=64))[k] != v},
                                 "seeds": rows}
    return out


def summarise(folds: dict) -> dict:
    """Per variant: mean and std over seeds per task and ranking; the rule's check; the chosen variant."""
    table = {}
    for name in folds["A"]["variants"]:
        rows = folds["A"]["variants"][name]["seeds"] + folds["unseen"]["variants"][name]["seeds"]
        cell = {}
        for t in TASKS:
            for r in ("hamming", "default", "w0.9"):
                v = [row[t][r] for row in rows if t in row]
                cell[f"{t} {r}"] = {"mean": float(np.mean(v)), "std": float(np.std(v)), "n": len(v)}
        ok = all(cell[f"{t} default"]["mean"] - cell[f"{t} hamming"]["mean"] >= -max(cell[f"{t} hamming"]["std"], 1e-9)
                 for t in TASKS)
        table[name] = {"ranking_not_below_hamming": ok,
                       "mean_default": float(np.mean([cell[f"{t} default"]["mean"] for t in TASKS])),
                       "mean_hamming": float(np.mean([cell[f"{t} hamming"]["mean"] for t in TASKS])), **cell}
    allowed = [n for n in table if table[n]["ranking_not_below_hamming"]]
    chosen = max(allowed, key=lambda n: table[n]["mean_default"]) if allowed else None
    return {"rule": "default ranking (re-rank at the labelled weight) not below the Hamming order by more than one "
                    "seed std on any task; then the best mean of the default ranking over A-val, "
                    "val-unseen@unseen and val-unseen@all", "table": table, "chosen": chosen}


#: Re-rank weights of the chosen head's default ranking tried by ``--weights`` (the select_gate grid's span).
WEIGHTS = (0.0, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9)


def select_weight(records, args) -> dict:
    """The default recipe's head (``training.hashing.default_recipe``) on both folds, 3 seeds, ranked at each of
    :data:`WEIGHTS`; issue 15's rule picks the weight (``rshash.ranking.WHITENED_LABELLED_WEIGHT``)."""
    from rshash.training.hashing import default_recipe

    rows: dict[str, list[dict]] = {}
    for fold in ("A", "unseen"):
        s, tasks, _ = fold_setup(fold, records, args.cache_dir)
        for seed in args.seeds:
            _, codes, desc = s.trained(default_recipe(None, seed))
            for tn, task in tasks.items():
                row = {"seed": seed, "hamming": evaluate(codes, s.data.labels, task, rerank=False)["map_all"]}
                row |= {f"w{w}": evaluate(codes, s.data.labels, task, desc, weight=w)["map_all"] for w in WEIGHTS}
                rows.setdefault(tn, []).append(row)
                print(f"[weights] {tn} seed {seed}: " + json.dumps({k: round(v, 4) for k, v in row.items()}), flush=True)
    stats = {tn: {k: {"mean": float(np.mean([r[k] for r in rs])), "std": float(np.std([r[k] for r in rs]))}
                  for k in rs[0] if k != "seed"} for tn, rs in rows.items()}
    table = {}
    for w in WEIGHTS:
        gaps = {tn: stats[tn][f"w{w}"]["mean"] - stats[tn]["hamming"]["mean"] for tn in stats}
        table[str(w)] = {"mean": float(np.mean([stats[tn][f"w{w}"]["mean"] for tn in stats])),
                         "minus_hamming": gaps,
                         "ranking_not_below_hamming": all(gaps[tn] >= -max(stats[tn]["hamming"]["std"], 1e-9)
                                                          for tn in stats)}
    allowed = [w for w in WEIGHTS if table[str(w)]["ranking_not_below_hamming"]]
    chosen = max(allowed, key=lambda w: table[str(w)]["mean"]) if allowed else None
    return {"recipe": "training.hashing.default_recipe (whiten, 128 bits)", "weights": list(WEIGHTS), "rows": rows,
            "stats": stats, "table": table, "chosen": chosen,
            "rule": "issue 15's: the weights whose default ranking is not below the Hamming order by more than one "
                    "seed std on any task (A-val, val-unseen@unseen, val-unseen@all), then the best mean"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data")
    p.add_argument("--cache-dir")
    p.add_argument("--fold", choices=("A", "unseen", "both"), default="both")
    p.add_argument("--seeds", type=lambda x: [int(v) for v in x.split(",")], default=[0, 1, 2])
    p.add_argument("--merge", action="store_true", help="combine the per-fold files into the results file")
    p.add_argument("--resume", action="store_true", help="keep the variants a fold's file already holds")
    p.add_argument("--weights", action="store_true", help="choose the re-rank weight of the default recipe's head "
                   "(both folds) and add it to the results file as 'weight'")
    args = p.parse_args(argv)
    if args.weights:
        torch.set_num_threads(1)
        t0 = time.perf_counter()
        result = json.loads(OUT.read_text())
        command = "python benchmarks/select_whitening.py " + " ".join(sys.argv[1:] if argv is None else argv)
        result["weight"] = select_weight(load_records(resolve_data_dir(args.data)), args) | {
            "command": command, "seconds": round(time.perf_counter() - t0, 1),
            "machine": f"{platform.platform()}, python {platform.python_version()}, torch {torch.__version__}, 1 thread"}
        result["command"] = f"{result['command']}; then {command}"
        atomic_write_text(OUT, json.dumps(result, indent=1))
        print("chosen weight:", result["weight"]["chosen"], json.dumps(result["weight"]["table"]))
        return 0
    if args.merge:
        folds = {f: json.loads(OUT.with_suffix(f".{f}.json").read_text()) for f in ("A", "unseen")}
        result = {"command": "python benchmarks/select_whitening.py --fold A; ... --fold unseen; ... --merge",
                  "folds": folds, "selection": summarise({f: v["results"] for f, v in folds.items()})}
        atomic_write_text(OUT, json.dumps(result, indent=1))
        for name, row in result["selection"]["table"].items():
            print(f"{name}: ok {row['ranking_not_below_hamming']} default {row['mean_default']:.4f} "
                  f"hamming {row['mean_hamming']:.4f} " + " ".join(
                      f"{t} {row[f'{t} hamming']['mean']:.4f}/{row[f'{t} default']['mean']:.4f}" for t in TASKS))
        print("chosen:", result["selection"]["chosen"])
        return 0
    torch.set_num_threads(1)
    records = load_records(resolve_data_dir(args.data))
    for fold in (("A", "unseen") if args.fold == "both" else (args.fold,)):
        t0 = time.perf_counter()
        results = run_fold(fold, records, args)
        command = "python benchmarks/select_whitening.py " + " ".join(sys.argv[1:] if argv is None else argv)
        earlier = OUT.with_suffix(f".{fold}.json")
        if args.resume and earlier.is_file():
            command = f"{json.loads(earlier.read_text())['command']}; then {command}"
        payload = {"command": command,
                   "machine": f"{platform.platform()}, python {platform.python_version()}, torch {torch.__version__}, 1 thread",
                   "data": "UC Merced Land Use (21 classes x 100 images); view 0 from cached features",
                   "seconds": round(time.perf_counter() - t0, 1), "results": results}
        atomic_write_text(OUT.with_suffix(f".{fold}.json"), json.dumps(payload, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
