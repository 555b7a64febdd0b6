"""Baselines against our hashing model on UCMD, on the same features, splits and metrics.

Two protocols (see :mod:`rshash.evaluation.protocols`):

* **A**: seeded 80/20 split; queries = the 420 test images, database = the 1680
  training images; mAP over the full Hamming ranking (normalised by all relevant).
* **unseen classes**: a fixed set of 5 held-out classes; fine-tuning and hash
  training use only the 16 seen classes; per unseen class 80 database / 20
  query images, seeds 0, 1, 2 (mean and std).

Methods: LSH and ITQ on the pretrained and on the fine-tuned last-stage features,
cosine k-NN on both (no hashing, bits "real"), and DPSH, HashNet, CSQ, MiLAN and
ours, all trained by ``train_hash_head`` on the same hierarchical level vectors
(only the objective differs). One thread throughout.

    RSHASH_CACHE=/tmp/rscache python benchmarks/baselines.py
    python benchmarks/baselines.py --bits 16 --seeds 0 --baseline-epochs 2 --unseen-epochs 2   # quick check
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from rshash.baselines import ITQ, LSH, head_codes, knn_report, train_deep
from rshash.data.datasets import load_records, resolve_data_dir
from rshash.evaluation.protocols import RetrievalTask, evaluate_codes, protocol_a, unseen_assignment, unseen_classes, unseen_task
from rshash.io_utils import atomic_write_text
from rshash.training.hashing import HashTrainConfig, default_recipe
from rshash.training.pipeline import Setup, TrainOptions, setup, teacher_features

RESULTS = Path(__file__).parent / "results" / "baselines.json"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_doc import write_section  # noqa: E402
UNSUPERVISED = {"lsh": LSH, "itq": ITQ}
DEEP = ("dpsh", "hashnet", "csq", "milan", "ours", "ours-lstm")
N_UNSEEN = 5
CLASS_SPLIT_SEED = 0
FINETUNE_SEED = 0
KEYS = ("map_all", "map_at_20", "p_at_10")
#: Methods run in our shared training loop without their papers' own tuning; listed with the reason.
NOT_COMPARABLE = ("dpsh", "hashnet")
NOT_COMPARABLE_WHY = (
    "Both run inside our shared loop (our LSTM head, P x M batches, AdamW, 15 epochs on protocol A and 8 on unseen "
    "classes, epoch chosen by validation mAP) with their losses' default weights, not with their papers' training "
    "recipes (DPSH: pairwise likelihood with its own eta and long schedule; HashNet: the continuation schedule of "
    "beta and weighted pairs over many epochs). They land below unsupervised ITQ on the same fine-tuned features, "
    "which points at this setup rather than at the methods, so their numbers are not a fair comparison.")


# ---------------------------------------------------------------------------- inputs


@dataclasses.dataclass
class Inputs:
    """Everything one protocol's methods need, all indexed like the feature bank."""

    levels: np.ndarray  # (N, V, D) fine-tuned level vectors
    dims: list[int]
    teacher: np.ndarray  # (N, V, C) fine-tuned last-stage features (the neighbourhood term of ours-lstm)
    labels: np.ndarray
    num_classes: int
    train: np.ndarray  # the hash head learns from these...
    val: np.ndarray  # ...and picks its epoch on these
    features: dict[str, np.ndarray]  # view-0 real-valued features: "pretrained", "finetuned"


def inputs_from(s: Setup) -> Inputs:
    bank, data = s.data.bank, s.data
    finetuned = teacher_features(dataclasses.replace(bank, pooled=s.levels))[:, 0]
    # the neighbourhood term's teacher: the fine-tuned features, as HashTrainConfig.teacher says (every view)
    teacher = teacher_features(dataclasses.replace(bank, pooled=s.levels))
    return Inputs(s.levels, bank.tap_dims, teacher, data.labels, len(data.class_names),
                  data.train, data.val, {"pretrained": bank.head_features(slice(None), 0), "finetuned": finetuned})


# ---------------------------------------------------------------------------- methods


def unsupervised(name: str, source: str, bits: int, seed: int, x: Inputs, task: RetrievalTask) -> dict[str, float]:
    """LSH/ITQ fitted on the training images' features, evaluated on the task."""
    feats = x.features[source]
    fit_on = np.concatenate([x.train, x.val])
    return evaluate_codes(UNSUPERVISED[name](bits, seed=seed).fit(feats[fit_on]).codes(feats), x.labels, task)


def deep(name: str, bits: int, seed: int, epochs: int, x: Inputs, task: RetrievalTask) -> dict[str, float]:
    """A head of method ``name``: "ours" is the default recipe (the closed-form whitening head: no epochs), the
    others, "ours-lstm" (the previous default: LSTM head + our losses) among them, train ``epochs`` epochs."""
    config = default_recipe(bits, seed) if name == "ours" else HashTrainConfig(bits=bits, epochs=epochs, seed=seed)
    head, _ = train_deep(name, x.levels, x.dims, x.teacher, x.labels, x.train, x.val, x.num_classes, config)
    return evaluate_codes(head_codes(head, x.levels, x.dims), x.labels, task)


def method_runs(bits_list: list[int], methods: list[str], epochs: Callable[[str], int]) -> list[tuple[str, str, Callable]]:
    """``(method key, bits key, run(seed, inputs, task) -> metrics)`` for every requested method and length."""
    runs = []
    for source in ("pretrained", "finetuned"):
        if f"knn_cosine_{source}" in methods:
            runs.append((f"knn_cosine_{source}", "real", lambda seed, x, t, s=source: knn_report(x.features[s], x.labels, t)))
    for name in UNSUPERVISED:
        for source in ("pretrained", "finetuned"):
            if f"{name}_{source}" in methods:
                runs += [(f"{name}_{source}", str(b), lambda seed, x, t, n=name, s=source, b=b: unsupervised(n, s, b, seed, x, t))
                         for b in bits_list]
    for name in DEEP:
        if name in methods:
            runs += [(name, str(b), lambda seed, x, t, n=name, b=b: deep(n, b, seed, epochs(n), x, t)) for b in bits_list]
    return runs


# ---------------------------------------------------------------------------- protocols


def run_protocol_a(records, args, results: dict, save: Callable[[], None]) -> None:
    s = setup(records, TrainOptions(cache_dir=args.cache_dir))
    x, task = inputs_from(s), protocol_a(s.data)
    results["protocol"]["protocol_A_sizes"] = {"queries": len(task.queries), "database": len(task.database)}
    out = results.setdefault("protocol_A", {})
    epochs = lambda n: args.ours_epochs if n.startswith("ours") else args.baseline_epochs  # noqa: E731
    for method, bits, run in method_runs(args.bits, args.methods, epochs):
        if bits in out.get(method, {}):
            continue  # resumed
        t = time.perf_counter()
        metrics = run(0, x, task)
        out.setdefault(method, {})[bits] = {k: metrics[k] for k in KEYS} | {"seconds": round(time.perf_counter() - t, 1)}
        print(f"[A] {method:22s} {bits:>4s} bits  mAP@all {metrics['map_all']:.4f}  mAP@20 {metrics['map_at_20']:.4f}"
              f"  ({time.perf_counter() - t:.0f} s)", flush=True)
        save()


def unseen_setup(records, args) -> tuple[Inputs, list[int], list[str]]:
    """Fine-tune on the seen classes only (one fine-tuning, seed FINETUNE_SEED); unseen images are "test"."""
    names = sorted({r.label for r in records})
    unseen = unseen_classes(names, N_UNSEEN, CLASS_SPLIT_SEED)
    s = setup(records, TrainOptions(cache_dir=args.cache_dir), assignment=unseen_assignment(records, unseen, FINETUNE_SEED))
    if set(s.data.labels[np.concatenate([s.data.train, s.data.val])]) & {names.index(u) for u in unseen}:
        raise RuntimeError("an unseen class leaked into the training split")
    return inputs_from(s), [s.data.class_names.index(u) for u in unseen], unseen


def run_unseen(records, args, results: dict, save: Callable[[], None]) -> None:
    x, unseen_ids, unseen = unseen_setup(records, args)
    results["protocol"]["unseen_classes"] |= {"classes": unseen, "seen_classes": x.num_classes - len(unseen)}
    per_seed = results.setdefault("unseen_classes_per_seed", {})
    for method, bits, run in method_runs(args.bits, args.methods, lambda n: args.unseen_epochs):
        scores = per_seed.setdefault(method, {}).setdefault(bits, {})
        for seed in args.seeds:
            if str(seed) in scores:
                continue
            t = time.perf_counter()
            metrics = run(seed, x, unseen_task(x.labels, unseen_ids, seed))
            scores[str(seed)] = {k: metrics[k] for k in KEYS}
            print(f"[unseen seed {seed}] {method:22s} {bits:>4s} bits  mAP@all {metrics['map_all']:.4f}"
                  f"  ({time.perf_counter() - t:.0f} s)", flush=True)
            save()
    results["unseen_classes"] = summarise_seeds(per_seed)
    save()


def summarise_seeds(per_seed: dict) -> dict:
    out: dict = {}
    for method, by_bits in per_seed.items():
        for bits, seeds in by_bits.items():
            entry = {}
            for key in KEYS:
                values = np.array([m[key] for m in seeds.values()])
                entry[f"{key}_mean"], entry[f"{key}_std"] = float(values.mean()), float(values.std())
            out.setdefault(method, {})[bits] = entry | {"seeds": sorted(int(s) for s in seeds)}
    return out


# ---------------------------------------------------------------------------- report


def machine() -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    return {"platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "load_average_at_start": list(os.getloadavg()), "python": platform.python_version(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads()}


def protocol_notes(args) -> dict:
    return {
        "protocol_A": "UCMD, seeded (0) stratified 80/20 split, 10% of training carved out as val for epoch choice; "
                      "queries = 420 test images, database = 1680 training images (train+val); view 0; Hamming ranking "
                      "with ties by database order; map_all = AP over the full ranking normalised by all relevant; "
                      "map_at_20 normalised by relevant found in the top 20",
        "unseen_classes": {
            "description": f"{N_UNSEEN} classes held out (fixed, class-split seed {CLASS_SPLIT_SEED}); fine-tuning and "
                           "hash training see only the other classes (90/10 train/val); per unseen class 80 % database "
                           "and 20 % query images (UCMD: 80 and 20) drawn per seed; mean and std over seeds",
            "seeds": args.seeds,
            "what_the_seed_varies": "the unseen database/query draw, the hash head's initialisation and batches, the "
                                    "LSH hyperplanes and the ITQ start rotation; the fine-tuning is done once "
                                    f"(seed {FINETUNE_SEED}) to fit the time budget",
        },
        "unsupervised": "LSH and ITQ fitted on the training images' view-0 features (unseen: seen classes only); "
                        "pretrained = ImageNet last-stage average-pooled features, finetuned = the same after fine-tuning",
        "knn_cosine": "no hashing: full ranking by cosine similarity of the real-valued features (bits 'real')",
        "deep": "ours = the default recipe (training.hashing.default_recipe: the closed-form learned whitening of the "
                "fine-tuned last level from same-class pairs, then ITQ; no epochs). DPSH, HashNet, CSQ, MiLAN and "
                "ours-lstm (the previous default: our losses) share the LSTM head over the fine-tuned level vectors, "
                "P x M batches, AdamW + cosine schedule and the epoch choice by validation mAP; only the objective differs",
        "epochs": {"ours_protocol_A": args.ours_epochs, "baselines_protocol_A": args.baseline_epochs,
                   "all_methods_unseen_classes": args.unseen_epochs, "default_HashTrainConfig": HashTrainConfig.epochs,
                   "why": "one CPU thread on a shared 2-core machine: the baselines (and every method on the unseen "
                          "protocol, 3 seeds) are trained for fewer epochs than our default to fit ~25-30 min"},
    }


def markdown(results: dict) -> str:
    """Tables of map_all: protocol A (one number) and unseen classes (mean +- std)."""
    bits_cols = ["16", "32", "64", "128", "real"]

    def table(section: str, cell: Callable[[dict], str]) -> list[str]:
        rows = results.get(section, {})
        lines = ["| method | " + " | ".join(f"{b} bits" if b != "real" else "real-valued" for b in bits_cols) + " |",
                 "|---" * (len(bits_cols) + 1) + "|"]
        for method, by_bits in rows.items():
            name = f"{method} (not comparable, see note)" if method in NOT_COMPARABLE else method
            lines.append(f"| {name} | " + " | ".join(cell(by_bits[b]) if b in by_bits else "" for b in bits_cols) + " |")
        return lines

    notes = results["protocol"]
    epochs, sizes, unseen = notes["epochs"], notes.get("protocol_A_sizes", {}), notes["unseen_classes"]
    default = " (the default)" if epochs["ours_protocol_A"] == epochs["default_HashTrainConfig"] else ""
    return "\n".join([
        "# Baselines on UCMD (mAP@all)", "",
        f"Generated by `{results['command']}` on {results['date'][:10]} ({results['machine']['cpu']}, one thread). "
        "mAP@all: AP over the full Hamming ranking (cosine for real-valued), normalised by all relevant items.", "",
        f"## Protocol A: {sizes.get('queries')} test queries against the {sizes.get('database')} training images", "",
        "Ours: the default recipe (the closed-form whitening head: no epochs); ours-lstm (the previous default: the "
        f"LSTM head with our losses): {epochs['ours_protocol_A']} epochs{default}; DPSH, HashNet, CSQ, MiLAN: "
        f"{epochs['baselines_protocol_A']} epochs, same head, levels and batches.", "",
        *table("protocol_A", lambda m: f"{m['map_all']:.4f}"), "",
        f"## Unseen classes: trained on {unseen.get('seen_classes')} classes, retrieval among "
        f"{len(unseen.get('classes', []))} others", "",
        f"Held-out classes: {', '.join(unseen.get('classes', []))}; per class 80 % database / 20 % "
        f"queries; mean ± std over seeds {unseen['seeds']}; every deep method "
        f"{epochs['all_methods_unseen_classes']} epochs; fine-tuning once on the seen classes.", "",
        *table("unseen_classes", lambda m: f"{m['map_all_mean']:.4f} ± {m['map_all_std']:.4f}"), "",
        f"Not comparable: {', '.join(NOT_COMPARABLE)}. {NOT_COMPARABLE_WHY}", "",
        f"Epochs: these unseen-class runs train every deep method for {epochs['all_methods_unseen_classes']} epochs, "
        f"fewer than the default {epochs['default_HashTrainConfig']} used by the UCMD section above, because "
        f"{epochs['why']}; compare methods within one table, not across the two.", "",
        "Unseen@all (the unseen queries against their database plus every seen-class image) for ours, CSQ, ITQ "
        "and cosine kNN, and ours re-ranked, are in the UCMD hashing section above (benchmarks/ucmd_hashing.py).", "",
    ])


def command(argv: list[str]) -> str:
    """The command line as run, with the feature cache it used."""
    cache = f"RSHASH_CACHE={os.environ['RSHASH_CACHE']} " if os.environ.get("RSHASH_CACHE") else ""
    return " ".join([f"{cache}python benchmarks/baselines.py", *argv])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    all_methods = ["lsh_pretrained", "lsh_finetuned", "itq_pretrained", "itq_finetuned", "knn_cosine_pretrained",
                   "knn_cosine_finetuned", *DEEP]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="UCMD folder (default: $RSHASH_DATA or ../shared)")
    p.add_argument("--cache-dir", default=os.environ.get("RSHASH_CACHE"), help="feature cache (default $RSHASH_CACHE)")
    p.add_argument("--bits", type=lambda s: [int(b) for b in s.split(",")], default=[16, 32, 64])
    p.add_argument("--seeds", type=lambda s: [int(b) for b in s.split(",")], default=[0, 1, 2])
    p.add_argument("--methods", type=lambda s: s.split(","), default=all_methods)
    p.add_argument("--protocols", type=lambda s: s.split(","), default=["A", "unseen"])
    p.add_argument("--ours-epochs", type=int, default=HashTrainConfig.epochs)
    p.add_argument("--baseline-epochs", type=int, default=15)
    p.add_argument("--unseen-epochs", type=int, default=8)
    p.add_argument("--resume", action="store_true", help="keep finished entries of an earlier run's JSON")
    p.add_argument("--rerun", type=lambda s: s.split(","), default=[],
                   help="with --resume: methods whose earlier entries are dropped and measured again")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--render-only", action="store_true", help="rewrite the docs section from the existing JSON")
    args = p.parse_args(argv)
    unknown = set(args.methods) - set(all_methods)
    if unknown:
        p.error(f"unknown methods {sorted(unknown)}; choose from {all_methods}")
    return args


def main(argv: list[str] | None = None) -> int:
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")  # fine-tuning progress
    args = parse_args(argv)
    if args.render_only:
        write_section("baselines", markdown(json.loads(args.out.read_text())))
        return 0
    records = load_records(resolve_data_dir(args.data))
    results = json.loads(args.out.read_text()) if args.resume and args.out.is_file() else {}
    for method in args.rerun:
        results.get("protocol_A", {}).pop(method, None)
        results.get("unseen_classes_per_seed", {}).pop(method, None)
    history = results.get("commands") or ([results["command"]] if "command" in results else [])
    results.pop("command_note", None)  # superseded by the command history
    results |= {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "command": command(sys.argv[1:] if argv is None else argv),
                "machine": machine(), "protocol": protocol_notes(args)}
    results["commands"] = [*history, results["command"]]
    t0, earlier = time.perf_counter(), results.get("total_seconds", 0.0)

    def save() -> None:
        results["total_seconds"] = round(earlier + time.perf_counter() - t0, 1)
        atomic_write_text(args.out, json.dumps(results, indent=1))

    if "A" in args.protocols:
        run_protocol_a(records, args, results, save)
    if "unseen" in args.protocols:
        run_unseen(records, args, results, save)
    save()
    write_section("baselines", markdown(results))
    print(f"wrote {args.out} and docs/RESULTS.md ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
