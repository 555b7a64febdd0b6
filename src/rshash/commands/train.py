"""``rshash train``: fine-tune, extract hierarchical features, train the hashing head, write a model dir."""

from __future__ import annotations

import argparse
import json
import logging

from ..data.datasets import load_records, resolve_data_dir
from ..data.sources import folder_source

# torch-heavy modules are imported in run(): building the CLI parser must stay fast for `rshash search`.

log = logging.getLogger("rshash.train")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a hashing model on labelled images or unlabelled rasters; write MODEL_DIR")
    p.add_argument("--data", help="folder of class sub-folders or CSV manifest (default: $RSHASH_DATA, ../shared UCMD); "
                   "a folder of images without class folders (or a manifest without labels) trains self-supervised "
                   "on augmented views, alone or with --rasters")
    p.add_argument("--rasters", nargs="+", metavar="FILE_OR_FOLDER",
                   help="train self-supervised on unlabelled georeferenced rasters instead: the same footprint in "
                   "another acquisition and augmented views are the positives (no labels needed)")
    p.add_argument("--out", required=True, help="model directory to write (atomically)")
    p.add_argument("--bits", type=int, default=None, help="code length K (multiple of 8); default 128")
    p.add_argument("--cell", choices=("whiten", "lstm", "gru", "none"), default=None,
                   help="labelled hashing head: whiten (the default: closed-form learned whitening of the fine-tuned "
                   "features from same-class pairs, then ITQ) or a head trained with the losses whose cell runs "
                   "over the level sequence (lstm: the paper's, gru, none = concat + MLP)")
    p.add_argument("--backbone", default="efficientnet-lite0")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--split", help="reuse a split JSON (e.g. MODEL_DIR/split.json) instead of drawing one")
    p.add_argument("--finetune-epochs", type=int, default=None, help="default 6")
    p.add_argument("--hash-epochs", type=int, default=None, help="epochs of a head trained with the losses (default 30)")
    p.add_argument("--no-finetune", action="store_true", help="keep the ImageNet backbone frozen")
    p.add_argument("--views", type=int, default=8, choices=range(1, 9), metavar="1..8",
                   help="dihedral views per image used for augmentation")
    p.add_argument("--gsd", type=float, metavar="METRES",
                   help="ground resolution of the --data images (labelled or not) in metres per pixel, recorded in the model (indexes "
                   "tile rasters at it with --gsd auto); default: 0.3 for UCMD, else unknown (with a warning)")
    p.add_argument("--cache-dir", help="feature cache (default $RSHASH_CACHE or ~/.cache/rshash)")
    g = p.add_argument_group("self-supervised (--rasters, unlabelled --data)")
    g.add_argument("--max-chips", type=int, default=None, metavar="N",
                   help="grid chips read per raster at most (a sparser grid beyond; default 3000)")
    g.add_argument("--aug-weight", type=float, default=None,
                   help="weight of augmented views next to time pairs (default 0: time pairs alone; without any, the views "
                   "alone)")
    g.add_argument("--refine-epochs", type=int, default=None,
                   help="epochs of loss refinement of the closed-form head (default 0)")
    g.add_argument("--grid", type=int, default=None, metavar="CELLS",
                   help="the codes read where things are in a chip: the stage-5 map pooled over CELLS x CELLS cells "
                   "(default 4: finds the same place at another date); 0: the globally pooled levels only (what is in "
                   "a chip wherever it is, the same under rotation)")
    p.set_defaults(func=run)


def run_selfsup(args: argparse.Namespace, images=None) -> int:
    from dataclasses import replace

    from ..training.selfsup import SelfSupConfig, train_selfsup

    config = SelfSupConfig(backbone=args.backbone, seed=args.seed)
    for field, value in (("bits", args.bits), ("max_chips_per_raster", args.max_chips),
                         ("aug_weight", args.aug_weight), ("refine_epochs", args.refine_epochs),
                         ("grid", args.grid)):
        if value is not None:
            config = replace(config, **{field: value})
    if config.grid < 0:
        raise SystemExit(f"--grid must be 0 or more cells per side, got {config.grid}")
    if args.views != 8:
        config = replace(config, views=args.views)
    if config.bits > config.dims:
        config = replace(config, dims=config.bits, pca_dims=max(config.pca_dims, 2 * config.bits))
    metrics = train_selfsup(args.rasters or [], args.out, config, cache_dir=args.cache_dir, images=images,
                            images_gsd=args.gsd)
    print(json.dumps({k: metrics[k] for k in ("fingerprint", "chips", "chips_per_source", "time_pairs",
                                               "skipped_rasters", "skipped_images", "timings")}, indent=1))
    return 0


def run(args: argparse.Namespace) -> int:
    if args.rasters and not args.data:
        return run_selfsup(args)
    data = resolve_data_dir(args.data)
    records = load_records(data)
    if not any(r.label for r in records):
        log.info("%s has no class folders or labels: training self-supervised on its images", data)
        return run_selfsup(args, images=data)
    if args.rasters:
        raise SystemExit("rshash train: labelled --data and --rasters cannot be mixed yet (give an unlabelled "
                         "folder, or train on each separately)")
    from ..training.finetune import FinetuneConfig
    from dataclasses import replace

    from ..training.hashing import default_recipe
    from ..training.pipeline import TrainOptions, train

    hash_config = default_recipe(args.bits, args.seed)
    if args.cell:
        hash_config = replace(hash_config, cell=args.cell)
    if args.hash_epochs:
        hash_config = replace(hash_config, epochs=args.hash_epochs)

    options = TrainOptions(
        backbone=args.backbone, seed=args.seed, test_fraction=args.test_fraction, views=args.views,
        finetune=not args.no_finetune, split_file=args.split, cache_dir=args.cache_dir,
        finetune_config=FinetuneConfig(epochs=args.finetune_epochs or FinetuneConfig.epochs, seed=args.seed),
        hash_config=hash_config,
        sources=[folder_source(data, records, args.gsd)],
    )
    metrics = train(records, args.out, options)
    summary = {k: metrics[k] for k in ("fingerprint", "timings") if k in metrics}
    summary["test_retrieval"] = metrics.get("test_retrieval")
    summary["test_accuracy"] = metrics.get("finetune", {}).get("test_accuracy")
    print(json.dumps(summary, indent=1))
    return 0
