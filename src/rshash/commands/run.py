"""``rshash run``: the main job end to end on embedded defaults (files + SQLite, no server).

train (skipped when the model directory exists) -> index the dataset -> a few
example searches -> evaluation report. Everything lands under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from ..data.datasets import load_records, resolve_data_dir
from ..data.splits import load_split
from ..model_config import ModelDirError, read_config

log = logging.getLogger("rshash.run")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="train, index, search and evaluate end to end (the README's main command)")
    p.add_argument("--data", help="dataset (default: $RSHASH_DATA, else ../shared/data/UCMerced_LandUse)")
    p.add_argument("--out", default="runs/ucmd", help="folder for model/, index/, examples.json, report/")
    p.add_argument("--bits", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--retrain", action="store_true", help="train again even if OUT/model exists")
    p.add_argument("--examples", type=int, default=3, help="example queries to run and print")
    p.set_defaults(func=run)


def _train_if_needed(args: argparse.Namespace, data_dir: Path, model_dir: Path) -> None:
    if model_dir.joinpath("config.json").is_file() and not args.retrain:
        try:
            read_config(model_dir)
            log.info("using the existing model in %s (--retrain to train again)", model_dir)
            return
        except ModelDirError as exc:
            log.warning("training again: %s", exc)
    from ..training.finetune import FinetuneConfig
    from ..training.hashing import HashTrainConfig
    from ..training.pipeline import TrainOptions, train

    from ..data.sources import folder_source

    records = load_records(data_dir)
    options = TrainOptions(seed=args.seed, finetune_config=FinetuneConfig(seed=args.seed),
                           hash_config=HashTrainConfig(bits=args.bits, seed=args.seed),
                           sources=[folder_source(data_dir, records)])
    metrics = train(records, model_dir, options)
    log.info("trained: %s", json.dumps(metrics.get("test_retrieval", {})))


def _drop_index_of_another_model(index_dir: Path, model_dir: Path) -> None:
    """The main job's index is derived from its data: after a retrain that changed the encoder, rebuild it."""
    import shutil

    from ..index import Index, IndexFormatError, ModelMismatchError

    if not (index_dir / "meta.sqlite").is_file():
        return
    try:
        Index.open(index_dir, model_dir).close()
    except (ModelMismatchError, IndexFormatError) as exc:
        log.warning("rebuilding %s with %s: %s", index_dir, model_dir, exc)
        shutil.rmtree(index_dir)


def _example_searches(index, model_dir: Path, n: int) -> list[dict]:
    """Search with the first ``n`` test images (by indexed id) and print their top 5."""
    split = load_split(model_dir / "split.json")
    tests = [p for p, s in sorted(split.items()) if s == "test"][:: max(1, len(split) // (5 * max(n, 1)))][:n]
    examples = []
    for path in tests:
        hits = index.search(path, k=10)
        examples.append({"query": path, "results": [h.__dict__ for h in hits]})
        print(f"\nquery {path}")
        for h in hits[:5]:
            sim = "-" if h.similarity is None else f"{h.similarity:.3f}"
            print(f"  {h.rank:2d}  d={h.distance:2d}  sim={sim}  {h.label or '-':>18}  {h.path}")
    return examples


def run(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_model  # heavy imports only when needed
    from ..index import Index

    data_dir = resolve_data_dir(args.data)
    out = Path(args.out)
    model_dir, index_dir = out / "model", out / "index"
    _train_if_needed(args, data_dir, model_dir)
    _drop_index_of_another_model(index_dir, model_dir)
    index = Index.open_or_create(index_dir, model_dir)
    report = index.add_paths(load_records(data_dir))
    log.info("index: %s", report.summary())
    examples = _example_searches(index, model_dir, args.examples)
    (out / "examples.json").write_text(json.dumps(examples, indent=1))
    metrics = evaluate_model(model_dir, data_dir, out / "report")
    print(f"\nreport: {out / 'report' / 'index.html'}")
    print(json.dumps({k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}, indent=1))
    return 0
