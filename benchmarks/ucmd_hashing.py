"""UCMD hashing benchmark: protocols A and B, all code lengths, ablations, unseen classes.

    python benchmarks/ucmd_hashing.py [--data DIR] [--bits 16,32,48,64] [--quick]

Writes benchmarks/results/ucmd_hashing.json and the table in docs/RESULTS.md.
Codes are computed from the cached level vectors of view 0 (the un-rotated image) with the
trained head, which is what the exported encoder computes up to float16 storage of the cut map.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from rshash.codes import pack_codes
from rshash.data.datasets import class_names, load_records, resolve_data_dir
from rshash.evaluation.protocols import unseen_assignment, unseen_task
from rshash.evaluation.protocols import unseen_classes as held_out_classes
from rshash.data.splits import stratified_split
from rshash.metrics import retrieval_report
from rshash.training.hashing import HashTrainConfig, head_outputs, train_hash_head
from rshash.training.pipeline import Setup, TrainOptions, setup, teacher_features

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_doc import write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PROTOCOLS = {
    "protocol_A": "stratified 80/20 split (seed 0), 10% of training carved as val for epoch choice; database = 1680 training images (train+val), queries = 420 test images; view 0; Hamming ranking, ties by database order; map_all normalised by all relevant; map_at_20 normalised by relevant found in top 20 (min_norm variant: by min(20, relevant))",
    "protocol_B": "MiLAN: stratified 60/40 split (seed 0); each test image queries the other test images (itself excluded); map_at_20 normalised by relevant found in top 20",
    "ablations": "protocol A, mAP@all, one variant changed at a time from the default",
    "unseen_classes": "5 held-out classes (evaluation.protocols.unseen_classes, seed 0); one fine-tuning on the 16 seen classes; per unseen class 80% database / 20% queries drawn per seed (0,1,2); mAP@all mean and std",
}


def codes_for(s: Setup, head, levels: np.ndarray | None = None, dims=None) -> np.ndarray:
    lv = s.levels if levels is None else levels
    return pack_codes(head_outputs(head, lv[:, 0], dims or s.data.bank.tap_dims) >= 0.5)


def fit(s: Setup, cfg: HashTrainConfig, levels: np.ndarray | None = None, dims=None):
    lv = s.levels if levels is None else levels
    d = s.data
    t = time.perf_counter()
    head, m = train_hash_head(lv, dims or d.bank.tap_dims, teacher_features(d.bank), d.labels, d.train, d.val,
                              len(d.class_names), cfg, progress=False)
    return head, m, time.perf_counter() - t


def protocol_a(s: Setup, bits_list, base: HashTrainConfig, shared_s: float) -> dict:
    d, out = s.data, {}
    for bits in bits_list:
        head, m, secs = fit(s, replace(base, bits=bits))
        codes = codes_for(s, head)
        rep = retrieval_report(codes[d.test], d.labels[d.test], codes[d.database], d.labels[d.database])
        out[str(bits)] = {k: rep[k] for k in ("map_all", "map_at_20", "map_at_20_min_norm", "p_at_10")}
        out[str(bits)] |= {"val_map_all": m["val_map_all"], "hash_seconds": secs, "train_seconds": shared_s + secs}
        print(f"protocol A {bits} bits: {out[str(bits)]}", flush=True)
    return out


def last_level_only(s: Setup) -> tuple[np.ndarray, list[int]]:
    dims = s.data.bank.tap_dims
    return s.levels[:, :, sum(dims[:-1]):], dims[-1:]


def ablations(s: Setup, frozen: Setup, bits_list, base: HashTrainConfig) -> dict:
    d = s.data
    variants = {
        "ours (hierarchical, lstm, lossless + centres)": (s, base, None, None),
        "last stage only": (s, base, *last_level_only(s)),
        "gru": (s, replace(base, cell="gru"), None, None),
        "no recurrence (concat + mlp)": (s, replace(base, cell="none"), None, None),
        "margin triplet instead of lossless": (s, replace(base, triplet="margin"), None, None),
        "no quantization loss": (s, replace(base, w_quant=0.0), None, None),
        "no bit-balance loss": (s, replace(base, w_balance=0.0), None, None),
        "no hash-centre loss (the paper's three losses)": (s, replace(base, w_centre=0.0), None, None),
        "+ class loss (0.5)": (s, replace(base, w_class=0.5), None, None),
        "+ neighbourhood loss (0.1)": (s, replace(base, w_neighbour=0.1), None, None),
        "+ neighbourhood loss (1.0)": (s, replace(base, w_neighbour=1.0), None, None),
        "frozen ImageNet backbone": (frozen, base, None, None),
    }
    out: dict = {}
    for name, (setup_, cfg, lv, dims) in variants.items():
        out[name] = {}
        for bits in bits_list:
            head, m, secs = fit(setup_, replace(cfg, bits=bits), lv, dims)
            codes = codes_for(setup_, head, lv, dims)
            rep = retrieval_report(codes[d.test], d.labels[d.test], codes[d.database], d.labels[d.database])
            out[name][str(bits)] = {"map_all": rep["map_all"], "val_map_all": m["val_map_all"], "hash_seconds": secs}
            print(f"ablation {name} {bits}: {rep['map_all']:.4f}", flush=True)
    return out


def protocol_b(records, options: TrainOptions, bits_list, base: HashTrainConfig) -> dict:
    """MiLAN: 60/40 split; each test image queries the other test images; mAP@20 (found-normalised)."""
    outer = stratified_split(records, {"train": 0.6, "test": 0.4}, options.seed)
    train = [r for r in records if outer[r.path] == "train"]
    inner = stratified_split(train, {"train": 0.9, "val": 0.1}, options.seed + 1)
    s = setup(records, replace(options, test_fraction=0.4), assignment=outer | inner)
    d, out = s.data, {}
    for bits in bits_list:
        head, _, _ = fit(s, replace(base, bits=bits))
        codes = codes_for(s, head)
        rep = retrieval_report(codes[d.test], d.labels[d.test], codes[d.test], d.labels[d.test], exclude_self=True)
        out[str(bits)] = {"map_at_20": rep["map_at_20"], "map_at_20_min_norm": rep["map_at_20_min_norm"], "map_all": rep["map_all"]}
        print(f"protocol B {bits}: {out[str(bits)]}", flush=True)
    return out


def unseen_classes(records, options: TrainOptions, bits_list, base: HashTrainConfig, seeds=(0, 1, 2)) -> dict:
    """Train on 16 classes, index and query the 5 held out (the evaluation suite's protocol and split).

    One fine-tuning on the seen classes (seed 0, shared with benchmarks/baselines.py through the cache);
    the seed varies the unseen database/query draw and the head's initialisation and batches.
    """
    names = class_names(records)
    unseen = held_out_classes(names, 5, 0)
    s = setup(records, options, assignment=unseen_assignment(records, unseen, 0))
    d = s.data
    unseen_ids = [d.class_names.index(u) for u in unseen]
    scores: dict[str, list[float]] = {}
    variants = {"ours": base, "+ neighbourhood loss (1.0)": replace(base, w_neighbour=1.0)}
    knn: list[float] = []
    for seed in seeds:
        task = unseen_task(d.labels, unseen_ids, seed)
        q, db = task.queries, task.database
        for bits in bits_list:
            for name, cfg in variants.items():
                head, _, _ = fit(s, replace(cfg, bits=bits, seed=seed))
                codes = codes_for(s, head)
                key = str(bits) if name == "ours" else f"{bits} {name}"
                scores.setdefault(key, []).append(retrieval_report(codes[q], d.labels[q], codes[db], d.labels[db])["map_all"])
                print(f"unseen seed {seed} {key}: {scores[key][-1]:.4f}", flush=True)
        knn.append(cosine_map(d.bank.head_features(slice(None)), d.labels, q, db))
    out = {b: {"map_all_mean": float(np.mean(v)), "map_all_std": float(np.std(v)), "per_seed": v} for b, v in scores.items()}
    out["knn_cosine_pretrained"] = {"map_all_mean": float(np.mean(knn)), "map_all_std": float(np.std(knn)), "per_seed": knn}
    out["held_out_classes"] = unseen
    return out


def cosine_map(features: np.ndarray, labels: np.ndarray, q: np.ndarray, db: np.ndarray) -> float:
    """mAP@all of cosine-similarity ranking of real-valued features (the no-hashing reference)."""
    from rshash.metrics import average_precision

    f = features / np.linalg.norm(features, axis=1, keepdims=True)
    order = np.argsort(-(f[q] @ f[db].T), axis=1, kind="stable")
    rel = labels[db][order] == labels[q][:, None]
    return float(average_precision(rel).mean())


def machine() -> str:
    return f"{platform.platform()}, {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, python {platform.python_version()}, torch {torch.__version__}"


def write_markdown(results: dict) -> None:
    a, b = results["protocol_A"], results.get("protocol_B", {})
    lines = [
        "## UCMD hashing benchmark (ours)", "",
        f"Command: `{results['command']}`  ", f"Machine: {results['machine']}", "",
        "Protocol A: stratified 80/20 split (seed 0); database = the 1680 training images, queries = the 420 test images;"
        " mAP@all over the whole ranked database; mAP@20 normalised by relevant items found in the top 20;"
        " Hamming ranking with ties broken by database order.",
        "Protocol B (MiLAN): stratified 60/40 split; each test image queries the other test images (itself excluded);"
        " mAP@20 normalised by relevant items found in the top 20.", "",
        "| bits | A mAP@all | A mAP@20 | A P@10 | B mAP@20 | train s (head; phases 1-2 from cache) |", "|---|---|---|---|---|---|",
    ]
    for bits, r in a.items():
        lines.append(f"| {bits} | {r['map_all']:.4f} | {r['map_at_20']:.4f} | {r['p_at_10']:.4f} | "
                     f"{b.get(bits, {}).get('map_at_20', float('nan')):.4f} | {r['train_seconds']:.0f} |")
    if results.get("end_to_end"):
        e = results["end_to_end"]
        lines += ["", f"Cold end-to-end training of one code length ({e['bits']} bits, empty feature cache): "
                  f"{e['total_s']:.0f} s ({e['note']}); command `{e['command']}`."]
    if results.get("classification_accuracy") is not None:
        lines += ["", f"Fine-tuned classification accuracy on the protocol A test split: {results['classification_accuracy']:.4f}"]
    if results.get("ablations"):
        bits_cols = sorted({b for v in results["ablations"].values() for b in v}, key=int)
        lines += ["", "### Ablations (protocol A, mAP@all)", "", "| variant | " + " | ".join(f"{b} bits" for b in bits_cols) + " |",
                  "|---|" + "---|" * len(bits_cols)]
        for name, v in results["ablations"].items():
            lines.append(f"| {name} | " + " | ".join(f"{v[b]['map_all']:.4f}" if b in v else "-" for b in bits_cols) + " |")
    if results.get("unseen_classes"):
        u = results["unseen_classes"]
        lines += ["", f"### Unseen classes (trained on 16 classes; held out: {', '.join(u['held_out_classes'])}; database 80 and queries 20 per"
                  " unseen class; seeds 0,1,2; mAP@all mean ± std)", "", "| method | mAP@all |", "|---|---|"]
        for k, v in u.items():
            if k == "held_out_classes":
                continue
            label = f"ours {k.split(' ', 1)[0]} bits {k.split(' ', 1)[1] if ' ' in k else ''}" if k[0].isdigit() else k
            lines.append(f"| {label} | {v['map_all_mean']:.4f} ± {v['map_all_std']:.4f} |")
    write_section("ucmd_hashing", "\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data")
    p.add_argument("--bits", default="16,32,48,64")
    p.add_argument("--ablation-bits", default="32,64")
    p.add_argument("--unseen-bits", default="64")
    p.add_argument("--seeds", default="0,1,2", help="seeds of the unseen-class protocol")
    p.add_argument("--skip", default="", help="comma list of parts to skip: B,ablations,unseen")
    p.add_argument("--cache-dir")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/ucmd_hashing.json"))
    p.add_argument("--render-only", action="store_true", help="rewrite the docs table from the existing JSON")
    args = p.parse_args(argv)
    if args.render_only:
        write_markdown(json.loads(Path(args.out).read_text()))
        return 0
    bits_list = [int(b) for b in args.bits.split(",")]
    skip = set(filter(None, args.skip.split(",")))
    records = load_records(resolve_data_dir(args.data))
    options = TrainOptions(cache_dir=args.cache_dir)
    base = HashTrainConfig()
    t = time.perf_counter()
    s = setup(records, options)
    shared = time.perf_counter() - t
    results: dict = {
        "command": "python benchmarks/ucmd_hashing.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(),
        "data": "UC Merced Land Use, 21 classes x 100 images",
        "protocols": PROTOCOLS,
        "hash_config": base.__dict__,
        "phase_timings_s": s.timings,
        "phase_timings_note": "phases 1-2 (features, fine-tuning, levels) as measured in this run; near zero when cached on disk."
                              " train_seconds = these + the head's own training time; a cold `rshash train` run is timed in end_to_end.",
        "classification_accuracy": s.finetune_metrics.get("test_accuracy"),
    }
    results["protocol_A"] = protocol_a(s, bits_list, base, shared)
    if "B" not in skip:
        results["protocol_B"] = protocol_b(records, options, bits_list, base)
    if "ablations" not in skip:
        frozen = setup(records, replace(options, finetune=False))
        results["ablations"] = ablations(s, frozen, [int(b) for b in args.ablation_bits.split(",")], base)
    if "unseen" not in skip:
        results["unseen_classes"] = unseen_classes(records, options, [int(b) for b in args.unseen_bits.split(",")], base,
                                                   tuple(int(x) for x in args.seeds.split(",")))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    write_markdown(results)
    print(f"wrote {args.out} and docs/RESULTS.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
