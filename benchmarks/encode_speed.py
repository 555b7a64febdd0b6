"""Backbone encode speed: eager PyTorch (NCHW and channels-last) vs ONNX Runtime.

    python benchmarks/encode_speed.py [--runs 5] [--batch 32] [--threads 2]

Writes benchmarks/results/encode_speed.json: images/s of the pretrained EfficientNet-Lite0 stage
backbone (all tapped stages, i.e. what feature extraction runs), batch 32, 224 px, median of --runs timed
runs after one warm-up, on random pixels (speed does not depend on content).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from rshash.backbone import create_backbone
from rshash.features import PretrainedOutputs
from rshash.onnx_export import export_onnx, open_session, run_session_all

OUT = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "encode_speed.json"


def timed(fn, runs: int) -> list[float]:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = PretrainedOutputs(create_backbone()).eval()
    pixels = np.random.default_rng(0).integers(0, 256, (args.batch, 224, 224, 3), dtype=np.uint8)
    x = torch.from_numpy(pixels)
    results: dict = {}

    def eager(channels_last: bool):
        m = model.to(memory_format=torch.channels_last) if channels_last else model
        def run():
            with torch.no_grad():
                m(x)
        return run

    session = open_session(export_onnx(model, torch.zeros(1, 224, 224, 3, dtype=torch.uint8), outputs=("cut", "pooled")),
                           threads=args.threads)
    for name, fn in [("eager_nchw", eager(False)), ("eager_channels_last", eager(True)),
                     ("onnxruntime", lambda: run_session_all(session, pixels))]:
        times = timed(fn, args.runs)
        results[name] = {"images_per_s": args.batch / statistics.median(times), "median_batch_s": statistics.median(times),
                         "runs_s": times}
        print(name, f"{results[name]['images_per_s']:.1f} img/s", flush=True)
    report = {
        "what": "pretrained EfficientNet-Lite0 backbone, all tapped stages + pooling (feature extraction), uint8 input",
        "batch": args.batch, "input_px": 224, "threads": args.threads, "runs": args.runs, "statistic": "median",
        "results": results,
        "onnx_speedup_vs_best_eager": results["onnxruntime"]["images_per_s"]
        / max(results["eager_nchw"]["images_per_s"], results["eager_channels_last"]["images_per_s"]),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "load_average_at_end": os.getloadavg(),
                    "torch": torch.__version__, "onnxruntime": ort.__version__, "python": platform.python_version()},
        "command": "python benchmarks/encode_speed.py " + " ".join(argv or []),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
