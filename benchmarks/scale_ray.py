"""Ray engine vs local engine on one machine: the same N UCMD images indexed by each, timed, codes compared.

    python benchmarks/scale_ray.py [--n 200] [--data DIR] [--model runs/ucmd/model] [--workers N]

Writes benchmarks/results/scale_ray.json. Both runs index into a fresh index with the same model and batch size,
after one untimed read of every file (so neither pays the disk). The Ray run joins a local Ray started before the
clock (as a cluster would be up already: ``ray_start_s`` is reported apart) and is timed from the call to
``add_paths`` to its return: dataset planning, actor start-up (one ONNX Runtime session each), reading, decoding,
encoding and the commits here. ``ray_codes_identical``: every path's packed code and int8 descriptor equal the
local run's. :func:`measure` (``benchmarks/scale.py``'s arguments) and :func:`measure_paths` are importable.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "scale_ray.json"


def default_data() -> Path:
    return Path(os.environ.get("RSHASH_DATA") or ROOT.parent / "shared" / "data" / "UCMerced_LandUse")


def _shown(path: Path) -> str:
    """A path as written into the results: relative to the repository when inside it (no machine paths)."""
    path = Path(path).absolute()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def _stored(index) -> dict[str, tuple[bytes, bytes]]:
    ids = index._store.run(lambda conn: [i for (i,) in conn.execute("SELECT id FROM images")])
    return {m.path: (m.code, m.descriptor) for m in index._store.get(ids).values()}


def measure(args: argparse.Namespace) -> dict:
    """For ``benchmarks/scale.py``: its ``--model``, ``--data`` (None: the default) and ``--images``."""
    data = Path(args.data) if getattr(args, "data", None) else default_data()
    return measure_paths(data, Path(args.model), args.images, getattr(args, "workers", None))


def measure_paths(data: Path, model_dir: Path, n: int = 200, workers: int | None = None, batch_size: int = 32,
                  progress: bool = False) -> dict:
    """Time local vs Ray indexing of the first ``n`` images of ``data`` (sorted by path); return the results."""
    import ray

    from rshash.data.datasets import load_records
    from rshash.index import Index

    records = sorted(load_records(data), key=lambda r: r.path)[:n]
    for r in records:  # warm the page cache for both runs
        Path(r.path).read_bytes()
    results: dict = {"n_images": len(records), "batch_size": batch_size, "cpus": os.cpu_count(),
                     "machine": platform.processor() or platform.machine(), "model": _shown(model_dir)}
    with tempfile.TemporaryDirectory(prefix="rshash-scale-ray-") as tmp:
        with Index.create(Path(tmp) / "local", model_dir) as local:
            local.encoder  # loaded before the clock, as the Ray actors' sessions are not
            start = time.perf_counter()
            local_report = local.add_paths(records, batch_size=batch_size, progress=progress)
            results["local_s"] = time.perf_counter() - start
            local_rows = _stored(local)
        start = time.perf_counter()
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, configure_logging=False)
        results["ray_start_s"] = time.perf_counter() - start
        try:
            with Index.create(Path(tmp) / "ray", model_dir) as on_ray:
                start = time.perf_counter()
                ray_report = on_ray.add_paths(records, batch_size=batch_size, progress=progress, engine="ray",
                                              workers=workers)
                results["ray_s"] = time.perf_counter() - start
                ray_rows = _stored(on_ray)
            results["ray_workers"] = workers if workers is not None else "default (cluster CPUs / RSHASH_THREADS)"
        finally:
            ray.shutdown()
    results["local_report"] = local_report.to_dict()
    results["ray_report"] = ray_report.to_dict()
    results["local_images_per_s"] = len(records) / results["local_s"]
    results["ray_images_per_s"] = len(records) / results["ray_s"]
    results["ray_vs_local_throughput_ratio"] = results["ray_images_per_s"] / results["local_images_per_s"]
    results["ray_codes_identical"] = bool(local_rows) and ray_rows == local_rows
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=200, help="images (the first N by path)")
    p.add_argument("--data", type=Path, help="UCMD (default $RSHASH_DATA, else ../shared/data/UCMerced_LandUse)")
    p.add_argument("--model", type=Path, default=ROOT / "runs" / "ucmd" / "model")
    p.add_argument("--workers", type=int, default=None, help="Ray encoder actors (default: the engine's)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    data = args.data or default_data()
    if not data.is_dir():
        print(f"no UCMD at {data}: set RSHASH_DATA or pass --data", file=sys.stderr)
        return 2
    results = measure_paths(data, args.model, args.n, args.workers, args.batch_size)
    results["data"] = data.name
    results["command"] = "python benchmarks/scale_ray.py " + " ".join(sys.argv[1:] if argv is None else argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps({k: results[k] for k in ("n_images", "local_images_per_s", "ray_images_per_s",
                                              "ray_vs_local_throughput_ratio", "ray_codes_identical")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
