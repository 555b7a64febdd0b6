"""``rshash quantize``: a model directory with a statically quantised int8 encoder (faster on CPUs)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quantize", help="write a copy of a model whose encoder is quantised to int8 (faster)",
                       description="Static int8 quantisation of the backbone convolutions, calibrated on images of "
                       "the model's training split. The new model makes slightly different codes: index with it anew.")
    p.add_argument("--model", required=True, type=Path, metavar="MODEL_DIR")
    p.add_argument("--out", required=True, type=Path, metavar="OUT_DIR")
    p.add_argument("--calibration", type=int, default=256, help="training images to calibrate on (default 256)")
    p.add_argument("--keep-float", choices=("none", "ends", "ends+depthwise"), default="none",
                   help="convolutions left in float: none (default), ends (stem and head) or ends+depthwise "
                        "(those and the depthwise ones); see benchmarks/results/scale.json for their cost and speed")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..quantize import calibration_paths, quantize_model

    if args.calibration < 1:
        raise ValueError(f"--calibration must be >= 1, got {args.calibration}")
    fingerprint = quantize_model(args.model, args.out, calibration_paths(args.model, args.calibration),
                                 keep_float=args.keep_float)
    print(f"{args.out}: int8 encoder, fingerprint {fingerprint}")
    return 0
