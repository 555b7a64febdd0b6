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


#: The shared rasters tiled for the raster measurement: native resolution, 32 px chips at half overlap (~6000 chips).
RASTER_FILES = ("cogeo.tif", "naip_m_4709963_se_14_1_20090818.tif", "naip_m_4709963_se_14_1_20200831.tif")
RASTER_OPTIONS = {"gsd": "native", "tile": 32, "overlap": 0.5}


def _stored_chips(index) -> dict[tuple, tuple[bytes, bytes]]:
    """Every chip's (raster file name, window) -> (code, descriptor)."""
    rows = _stored(index)
    return {(Path(p.split("#")[0]).name, p.split("#")[1]): v for p, v in rows.items()}


def measure_rasters(rasters: Path, model_dir: Path, address: str | None = None, workers: int | None = None,
                    batch_size: int = 32) -> dict:
    """Local vs Ray indexing of the shared rasters' chips (:data:`RASTER_OPTIONS`), Ray on ``address`` (a running
    cluster) or a local Ray started before the clock; chips compared code for code."""
    import ray

    from rshash.index import Index

    paths = [rasters / name for name in RASTER_FILES if (rasters / name).is_file()]
    for f in paths:
        f.read_bytes()
    out: dict = {"rasters": [f.name for f in paths], "options": RASTER_OPTIONS, "batch_size": batch_size,
                 "cpus": os.cpu_count(), "model": _shown(model_dir)}
    with tempfile.TemporaryDirectory(prefix="rshash-scale-ray-rasters-") as tmp:
        with Index.create(Path(tmp) / "local", model_dir) as local:
            local.encoder
            start = time.perf_counter()
            local_report = local.add_rasters(paths, batch_size=batch_size, progress=False, **RASTER_OPTIONS)
            out["local_s"] = time.perf_counter() - start
            local_rows = _stored_chips(local)
        start = time.perf_counter()
        if address is None:
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, configure_logging=False)
        else:
            ray.init(address=address, configure_logging=False)
        out["ray_start_s"] = time.perf_counter() - start
        out["ray_nodes"] = len([n for n in ray.nodes() if n.get("Alive")])
        try:
            with Index.create(Path(tmp) / "ray", model_dir) as on_ray:
                start = time.perf_counter()
                ray_report = on_ray.add_rasters(paths, batch_size=batch_size, progress=False, engine="ray",
                                                workers=workers, **RASTER_OPTIONS)
                out["ray_s"] = time.perf_counter() - start
                ray_rows = _stored_chips(on_ray)
        finally:
            ray.shutdown()
    out["chips"] = len(local_rows)
    out["local_report"] = {"added": local_report.added}
    out["ray_report"] = {"added": ray_report.added}
    out["local_chips_per_s"] = len(local_rows) / out["local_s"]
    out["ray_chips_per_s"] = len(ray_rows) / out["ray_s"]
    out["ray_vs_local_throughput_ratio"] = out["ray_chips_per_s"] / out["local_chips_per_s"]
    out["ray_raster_chips_identical"] = bool(local_rows) and ray_rows == local_rows
    return out


def two_process_cluster(rasters: Path, model_dir: Path) -> dict:
    """``ray start --head`` (1 CPU) plus a worker node (``ray start --address``, 1 CPU) on this machine: the same
    raster measurement through ``address``; both nodes share this machine's cores. Stopped afterwards."""
    import subprocess

    ray_bin = str(Path(sys.executable).with_name("ray"))
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    start = time.perf_counter()
    subprocess.run([ray_bin, "start", "--head", "--num-cpus=1", "--port=6390", "--include-dashboard=false"],
                   check=True, env=env, capture_output=True)
    try:
        subprocess.run([ray_bin, "start", "--address=127.0.0.1:6390", "--num-cpus=1"], check=True, env=env,
                       capture_output=True)
        started = time.perf_counter() - start
        out = measure_rasters(rasters, model_dir, address="127.0.0.1:6390", workers=1)
        out["cluster_start_s"] = started
        out["cluster"] = "ray start --head (1 CPU) + ray start --address (1 CPU), both on this machine's 2 cores"
        return out
    finally:
        subprocess.run([ray_bin, "stop", "--force"], env=env, capture_output=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=200, help="images (the first N by path)")
    p.add_argument("--data", type=Path, help="UCMD (default $RSHASH_DATA, else ../shared/data/UCMerced_LandUse)")
    p.add_argument("--model", type=Path, default=ROOT / "runs" / "ucmd" / "model")
    p.add_argument("--workers", type=int, default=None, help="Ray encoder actors (default: the engine's)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--rasters", type=Path, help="also raster chips from these shared rasters (default: "
                   "$RSHASH_RASTERS, else ../shared/data/rasters) when --raster-parts is given")
    p.add_argument("--raster-parts", default="", help="comma-separated: local-ray, cluster (raster chips)")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    data = args.data or default_data()
    if not data.is_dir():
        print(f"no UCMD at {data}: set RSHASH_DATA or pass --data", file=sys.stderr)
        return 2
    results = measure_paths(data, args.model, args.n, args.workers, args.batch_size) if args.n else {}
    results["data"] = data.name
    rasters = args.rasters or Path(os.environ.get("RSHASH_RASTERS") or ROOT.parent / "shared" / "data" / "rasters")
    parts = [x for x in args.raster_parts.split(",") if x]
    if "local-ray" in parts:
        results["rasters"] = measure_rasters(rasters, args.model, None, args.workers, args.batch_size)
        print(json.dumps(results["rasters"], indent=1), flush=True)
    if "cluster" in parts:
        results["rasters_two_process_cluster"] = two_process_cluster(rasters, args.model)
        print(json.dumps(results["rasters_two_process_cluster"], indent=1), flush=True)
    results["command"] = "python benchmarks/scale_ray.py " + " ".join(sys.argv[1:] if argv is None else argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps({k: results.get(k) for k in ("n_images", "local_images_per_s", "ray_images_per_s",
                                                  "ray_vs_local_throughput_ratio", "ray_codes_identical")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
