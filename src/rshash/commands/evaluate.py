"""``rshash evaluate``: encode a labelled dataset with a model's ONNX encoder, score retrieval, write a report.

On the model's own training data the split it was trained with decides who
queries whom (queries = test split, database = train + val); on any other data
(or with ``--protocol cross``) every image queries all the others.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from ..data.datasets import ImageRecord, SkipReport, class_names, load_records, resolve_data_dir
from ..data.splits import load_split
from ..evaluation.protocols import METRIC_NOTES, RetrievalTask, all_vs_all, evaluate, protocol_a
from ..evaluation.ranking import report_from_relevance
from ..model_config import model_rerank_weight

log = logging.getLogger("rshash.evaluate")

PROTOCOLS = ("auto", "split", "cross")
#: Cross-dataset queries are sampled down to this many (seeded): the distance matrix is queries x database.
MAX_QUERIES = 2000


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="retrieval metrics and an HTML report of a model on a labelled dataset")
    p.add_argument("--model", required=True, type=Path, metavar="MODEL_DIR")
    p.add_argument("--data", help="labelled folder or CSV manifest (default: $RSHASH_DATA, ../shared UCMD)")
    p.add_argument("--protocol", choices=PROTOCOLS, default="auto",
                   help="split: queries = the model's test split, database = train+val (needs the training data); "
                        "cross: every image queries all others; auto (default): split when the data is the "
                        "model's training data, else cross")
    p.add_argument("--out", required=True, type=Path, metavar="REPORT_DIR", help="report directory (index.html)")
    p.add_argument("--max-queries", type=int, default=MAX_QUERIES, help="cross protocol: sample at most this many queries")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    result = evaluate_model(args.model, resolve_data_dir(args.data), args.out, args.protocol,
                            max_queries=args.max_queries)
    m, task = result["metrics"], result["task"]
    print(f"protocol {result['protocol']}: {task['queries']} queries, {task['database']} database images, "
          f"{result['bits']} bits")
    h = result["metrics_hamming_only"]
    print(f"re-ranked:    mAP@all {m['map_all']:.4f}  mAP@20 {m['map_at_20']:.4f}  P@10 {m['p_at_10']:.4f}")
    print(f"Hamming only: mAP@all {h['map_all']:.4f}  mAP@20 {h['map_at_20']:.4f}  P@10 {h['p_at_10']:.4f}")
    if "metrics_multilabel" in result:
        ml = result["metrics_multilabel"]
        print(f"multi-label relevance (a shared label): mAP@all {ml['map_all']:.4f}  P@10 {ml['p_at_10']:.4f}")
    print(f"report: {result['report']}")
    return 0


# ---------------------------------------------------------------------------- steps


def encode_records(encoder, records: Sequence[ImageRecord], report: SkipReport, batch_size: int = 32,
                   progress: bool = True) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """``(N_ok, bits)`` bool codes, ``(N_ok, dims)`` descriptors and the indices of the records that decoded."""
    kept, codes, descriptors = [], [], []
    for idx, encoded in encoder.iter_paths([r.path for r in records], batch_size, report, progress):
        kept.extend(idx)
        codes.append(encoded.codes)
        descriptors.append(encoded.descriptors)
    if not kept:
        raise ValueError("no readable images to evaluate")
    return np.concatenate(codes), np.concatenate(descriptors), kept


def _headline(m: dict) -> str:
    return f"mAP@all {m['map_all']:.4f}, mAP@20 {m['map_at_20']:.4f}, P@10 {m['p_at_10']:.4f}"


def multi_hot(records: Sequence[ImageRecord]) -> tuple[np.ndarray, list[str]] | None:
    """``(N, L)`` bool label sets when some record has several labels (a multi-label manifest), else None."""
    if not any(len(r.label_set) > 1 for r in records):
        return None
    names = sorted({x for r in records for x in r.label_set})
    out = np.zeros((len(records), len(names)), dtype=bool)
    for i, r in enumerate(records):
        out[i, [names.index(x) for x in r.label_set]] = True
    return out, names


def _norm(path: str) -> str:
    return str(Path(path).resolve())


def model_split(model_dir: Path, records: Sequence[ImageRecord]) -> list[str] | None:
    """Each record's split in MODEL_DIR/split.json, or None unless every record is in it."""
    path = Path(model_dir) / "split.json"
    if not path.is_file():
        return None
    assignment = {_norm(p): s for p, s in load_split(path).items()}
    splits = [assignment.get(_norm(r.path)) for r in records]
    return None if any(s is None for s in splits) else splits


def split_task(splits: Sequence[str]) -> RetrievalTask:
    """Protocol A on the model's recorded split."""
    arr = np.asarray(splits)
    pick = lambda name: np.flatnonzero(arr == name)  # noqa: E731
    return protocol_a(
        argparse.Namespace(train=pick("train"), val=pick("val"), test=pick("test")),
        "queries = test split of MODEL_DIR/split.json, database = its train+val split (the training images)",
    )


def cross_task(n: int, max_queries: int, seed: int = 0) -> RetrievalTask:
    """Every image queries all others; with more than ``max_queries`` images, a seeded sample of queries."""
    if n <= max_queries:
        return all_vs_all(n)
    queries = np.sort(np.random.default_rng(seed).choice(n, size=max_queries, replace=False))
    return RetrievalTask("all_vs_all", f"{max_queries} sampled images (seed {seed}) each query all {n} images "
                         "(itself excluded)", queries, np.arange(n), exclude_self=True)


def choose_task(protocol: str, model_dir: Path, records: Sequence[ImageRecord],
                max_queries: int) -> tuple[RetrievalTask, str]:
    """The retrieval task and the protocol actually used ("split" or "cross")."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if protocol != "cross":
        splits = model_split(model_dir, records)
        if splits is not None and "test" in splits:
            return split_task(splits), "split"
        if protocol == "split":
            raise ValueError(f"--protocol split needs the model's training data: {model_dir}/split.json is missing, "
                             "does not cover every image of the data, or has no test images")
    return cross_task(len(records), max_queries), "cross"


# ---------------------------------------------------------------------------- entry point


def evaluate_model(model_dir: str | Path, data_dir: str | Path, out_dir: str | Path, protocol: str = "auto",
                   *, max_queries: int = MAX_QUERIES, batch_size: int = 32, progress: bool = True) -> dict:
    """Encode ``data_dir`` with the model, score retrieval and write ``out_dir`` (metrics.json + index.html).

    Returns the content of metrics.json: the protocol used, its task sizes, the
    headline metrics, per-class AP, the PR curve over Hamming radius and skips.
    """
    from ..encoder import Encoder  # onnxruntime and matplotlib load only when evaluating, not for --help
    from ..evaluation.report import ReportInputs, analyse, write_report

    model_dir, data_dir, out_dir = Path(model_dir), Path(data_dir), Path(out_dir)
    encoder = Encoder(model_dir)
    records = [r for r in load_records(data_dir) if r.label is not None]
    if not records:
        raise ValueError(f"evaluation needs class labels (class sub-folders or a labelled manifest): {data_dir}")
    skipped = SkipReport()
    codes, descriptors, kept = encode_records(encoder, records, skipped, batch_size, progress)
    records = [records[i] for i in kept]
    names = class_names(records)
    labels = np.array([names.index(r.label) for r in records])
    task, used = choose_task(protocol, model_dir, records, max_queries)
    weight = model_rerank_weight(encoder.config)
    analysis = analyse(codes, labels, names, task, descriptors, weight)
    result = {
        "model": str(model_dir), "fingerprint": encoder.fingerprint, "bits": encoder.bits, "data": str(data_dir),
        "protocol": used, "task": task.summary(), "metrics": report_from_relevance(analysis.rel, task.ks),
        "metrics_hamming_only": evaluate(codes, labels, task, rerank=False),
        "metric_notes": METRIC_NOTES,
        "rerank_weight": weight,
        "ranking": "two-stage as the index: Hamming shortlist, re-ranked by the stored descriptors at the model's "
                   "weight, ties by id "
                   "(metrics_hamming_only: Hamming distance, ties by database order)",
        "per_class_ap": analysis.per_class_ap, "pr_curve": analysis.pr_curve,
        "images": len(records), "skipped": skipped.skipped, "report": str(out_dir / "index.html"),
    }
    multi = multi_hot(records)
    if multi is not None:  # relevance = at least one shared label, beside the single-label numbers
        result["metrics_multilabel"] = evaluate(codes, multi[0], task, descriptors, weight=weight)
        result["metrics_multilabel_hamming_only"] = evaluate(codes, multi[0], task, rerank=False)
        result["multilabel_labels"] = multi[1]
    inputs = ReportInputs(
        f"rshash evaluation: {model_dir.name} on {data_dir.name}", codes, labels, names, task, result["metrics"],
        [r.path for r in records], {"model": f"{model_dir} (fingerprint {encoder.fingerprint})",
                                    "data": f"{data_dir} ({len(records)} images, {len(names)} classes)",
                                    "Hamming only (--rerank off)": _headline(result["metrics_hamming_only"])}
        | ({"multi-label relevance (a shared label)": _headline(result["metrics_multilabel"])} if multi else {}),
        descriptors=descriptors,
    )
    write_report(out_dir, inputs, analysis, result)
    log.info("evaluation report written to %s", out_dir / "index.html")
    return result
