"""Scale benchmark (issues 12, 18): encoder speed, the int8 encoder against the float one, and the IVF,
Ray and Milvus measurements.

    python benchmarks/scale.py --model runs/ucmd/model [--parts speed,encoder,ray,milvus,ivf] [--resume]

* **speed**: the default encoder's ceiling on pre-decoded pixels beside the end-to-end indexing rate of all
  UCMD images on the same run, the decode cost, and what the cores allow (see :func:`speed_part`).
* **encoder**: ``rshash quantize`` of the model (calibration: 256 images of its training split), then for
  the float and the int8 encoder: end-to-end indexing throughput (read, checksum, decode, resize, encode,
  commit; ``Index.add_paths`` on the first N UCMD images, 2 ONNX Runtime threads) and protocol A on the
  model's own split with the encoder on the real files (mAP@all Hamming and re-ranked), plus the share of
  code bits and the descriptor cosine between the two encoders.
* **ivf**: one node, rshash's IVF kind over ``--ivf-n`` (10^8) clustered 64-bit codes: build time, p50/p99 per
  query (one thread), recall@20 against an exact scan, peak RSS.
* **ray** / **milvus**: the measurements of ``benchmarks/scale_ray.py`` / ``benchmarks/scale_milvus.py``,
  run from here when those scripts exist (their own result files hold the details).

Writes benchmarks/results/scale.json with the ``targets`` object of issue 18 (``None`` = not measured) and its goals.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("RSHASH_PROGRESS", "0")

from rshash.commands.evaluate import choose_task, encode_records  # noqa: E402
from rshash.data.datasets import SkipReport, class_names, load_records, resolve_data_dir  # noqa: E402
from rshash.encoder import Encoder  # noqa: E402
from rshash.evaluation.protocols import evaluate  # noqa: E402
from rshash.index import Index  # noqa: E402
from rshash.io_utils import atomic_write_text  # noqa: E402
from rshash.model_config import read_config  # noqa: E402
from rshash.quantize import FLOAT_CONV_CHOICES, calibration_paths, quantize_model  # noqa: E402


#: The encoder indexing uses: the float one (`rshash quantize` makes an int8 model on request).
DEFAULT_ENCODER = "float32"
PARTS = ("speed", "encoder", "ray", "milvus", "ivf")
#: Issue 18's targets on this machine class (2 cores).
GOALS = {"encode_images_per_s": ">= 150", "protocol_A_default_drop": "<= 0.005",
         "same_place_recall10_drop": "<= 0.01", "two_stage_1e7_recall_at_20": ">= 0.99",
         "two_stage_1e7_p50_ms": "< 5", "search_anon_rss_gb_1e7": "<= 2", "ray_vs_local_throughput_ratio": ">= 0.8",
         "ray_raster_chips_identical": "true", "milvus_first_search_ms_1e6": "< 100",
         "milvus_reader_rss_gb_1e6": "<= 0.3"}


def index_rate(model: Path, records, work: Path) -> float:
    """Images per second through ``Index.add_paths`` (everything a user's ``rshash index`` does)."""
    with Index.create(work, model) as index:
        index.encoder  # noqa: B018 - load the session before timing
        start = time.perf_counter()
        report = index.add_paths(records, progress=False)
        seconds = time.perf_counter() - start
    return report.added / seconds


def _median_run(fn, runs: int) -> tuple[float, float, list[float]]:
    """(wall s, process CPU s) of the median of ``runs`` timed calls after one warm-up; all wall times."""
    fn()
    timed = []
    for _ in range(runs):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        timed.append((time.perf_counter() - wall, time.process_time() - cpu))
    timed.sort()
    return timed[len(timed) // 2][0], timed[len(timed) // 2][1], [t[0] for t in timed]


def speed_part(model: Path, records, runs: int = 3, batch_size: int = 32) -> dict:
    """The encoder's ceiling on pre-decoded pixels, the decode cost, and end-to-end indexing, on one run.

    * ceiling: the same images decoded beforehand; (a) one session of ``THREADS`` threads, batch by batch;
      (b) the local engine as indexing runs it (``THREADS`` single-threaded sessions at once); warm, median;
    * decode: read, checksum, decode and resize per image in one thread (CPU ms);
    * allowed: what the cores allow when every image is decoded and encoded: cores / (encode CPU + decode CPU)
      per image, the encode CPU taken from (b);
    * end to end: ``Index.add_paths`` of all the images into a new index (read, checksum, decode, resize,
      encode, commit); cold = the first run in this process (encoder session loaded inside the timing, files
      possibly in the OS cache), warm = median of ``runs`` later runs.
    """
    from rshash.encoding.items import FileLoader, FileWork, Loaded
    from rshash.encoding.local import LocalEngine
    from rshash.onnx_export import DEFAULT_THREADS

    work = [FileWork(r.path, r.label, None) for r in records]
    size = int(read_config(model).input_size)
    loader = FileLoader(size)
    start_cpu, start = time.process_time(), time.perf_counter()
    loaded = [x for x in loader(work) if isinstance(x, Loaded)]
    decode_cpu_ms = (time.process_time() - start_cpu) * 1000 / len(work)
    decode_wall_ms = (time.perf_counter() - start) * 1000 / len(work)
    pixels = [it.pixels for it in loaded]
    n = len(pixels)
    out: dict = {"images": n, "batch_size": batch_size, "threads": DEFAULT_THREADS, "runs": runs,
                 "statistic": "median", "decode_ms_per_image": {"cpu": decode_cpu_ms, "wall": decode_wall_ms}}

    with tempfile.TemporaryDirectory() as tmp:  # cold: the first index of this process, session load included
        start = time.perf_counter()
        with Index.create(Path(tmp) / "index", model) as index:
            report = index.add_paths(records, progress=False)
        out["end_to_end_cold_images_per_s"] = report.added / (time.perf_counter() - start)

    encoder = Encoder(model, threads=DEFAULT_THREADS)
    batches = [np.stack(pixels[i : i + batch_size]) for i in range(0, n, batch_size)]

    def one_session() -> None:
        for batch in batches:
            encoder.encode(batch)

    def pre_decoded(chunk):
        return [Loaded(str(i), "", size, size, pixels[i]) for i in chunk]

    engine = LocalEngine(encoder)

    def engine_run() -> None:
        for _ in engine.encode(range(n), pre_decoded, batch_size):
            pass

    ceiling: dict = {}
    for name, fn in (("one_session_threads", one_session), ("engine", engine_run)):
        wall, cpu, walls = _median_run(fn, runs)
        ceiling[name] = {"images_per_s": n / wall, "cpu_ms_per_image": cpu * 1000 / n, "runs_s": walls}
    ceiling["engine"]["workers"] = engine.workers
    out["ceiling"] = ceiling
    out["ceiling_images_per_s"] = max(c["images_per_s"] for c in ceiling.values() if isinstance(c, dict))
    cores = len(os.sched_getaffinity(0))
    out["allowed_images_per_s"] = cores * 1000 / (ceiling["engine"]["cpu_ms_per_image"] + decode_cpu_ms)
    out["allowed_note"] = (f"{cores} cores / (encode CPU of the engine ceiling + decode CPU) per image: the rate if "
                           "every core did useful work all the time")
    pixels.clear(), batches.clear(), loaded.clear()
    rates = []
    for i in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            rates.append(index_rate(model, records, Path(tmp) / "index"))
        print(f"end to end run {i}: {rates[-1]:.1f} img/s", flush=True)
    out["end_to_end_runs_images_per_s"] = rates
    out["end_to_end_images_per_s"] = float(np.median(rates))
    out["end_to_end_vs_allowed"] = out["end_to_end_images_per_s"] / out["allowed_images_per_s"]
    print(f"speed: {json.dumps(out, indent=1)}", flush=True)
    return out


def protocol_a(model: Path, records) -> tuple[dict, np.ndarray, np.ndarray]:
    """Protocol A on the model's split with its encoder on the real files: metrics, codes, descriptors."""
    encoder = Encoder(model)
    codes, descriptors, kept = encode_records(encoder, records, SkipReport(), progress=False)
    kept_records = [records[i] for i in kept]
    names = class_names(kept_records)
    labels = np.array([names.index(r.label) for r in kept_records])
    task, _ = choose_task("split", model, kept_records, 10**9)
    metrics = {"hamming": evaluate(codes, labels, task, rerank=False)["map_all"],
               "reranked": evaluate(codes, labels, task, descriptors)["map_all"],
               "queries": len(task.queries), "database": len(task.database)}
    return metrics, codes, descriptors


def encoder_part(model: Path, data: Path, n_images: int | None, variants: tuple[str, ...] = FLOAT_CONV_CHOICES) -> dict:
    """The float encoder against ``rshash quantize``'s int8 encoder, one int8 model per choice of convolutions
    kept in float: end-to-end indexing rate (all images, or ``n_images``) and protocol A on the real files."""
    records = load_records(data)
    indexed = records if n_images is None else records[:n_images]
    out: dict = {"calibration_images": 256, "index_images": len(indexed), "float_convolutions_tried": list(variants)}
    with tempfile.TemporaryDirectory() as tmp:
        models = [("float32", model, None)]
        for keep in variants:
            models.append((f"int8:{keep}", Path(tmp) / f"model-int8-{keep.replace('+', '-')}", keep))
        for name, m, keep in models:
            entry: dict = {}
            if keep is not None:
                start = time.perf_counter()
                quantize_model(model, m, calibration_paths(model, 256), keep_float=keep)
                entry["quantize_seconds"] = time.perf_counter() - start
            entry["index_images_per_s"] = index_rate(m, indexed, Path(tmp) / f"index-{name.replace(':', '-')}")
            entry["protocol_A_64"], codes, desc = protocol_a(m, records)
            if keep is None:
                ref_codes, ref_desc = codes, desc
            else:
                a = out["float32"]["protocol_A_64"]
                entry["bits_differing_fraction"] = float((codes != ref_codes).mean())
                entry["descriptor_cosine_mean"] = float(np.mean(np.sum(desc * ref_desc, axis=1)))
                entry["protocol_A_64_map_all_drop"] = {k: a[k] - entry["protocol_A_64"][k] for k in ("hamming", "reranked")}
                entry["speedup"] = entry["index_images_per_s"] / out["float32"]["index_images_per_s"]
            out[name] = entry
            print(f"{name}: {json.dumps(entry)}", flush=True)
    return out


def ivf_part(n: int, n_queries: int = 200, k: int = 20, seed: int = 0) -> dict:
    """One node: rshash's IVF kind over ``n`` clustered 64-bit codes; latency, recall@k against exact, RAM."""
    import resource

    import faiss

    from rshash.index.backends.faiss import CodeIndex
    from rshash.index.synthetic import ClusteredCodes
    from search_speed import recall_at_k

    source = ClusteredCodes(bits=64, centres=4000, seed=seed)
    start = time.perf_counter()
    database, queries = source.sample(n), source.sample(n_queries)
    out: dict = {"n": n, "queries": n_queries, "k": k, "bits": 64, "centres": 4000, "generate_s": time.perf_counter() - start}
    start = time.perf_counter()
    flat = faiss.IndexBinaryFlat(64)
    flat.add(database)
    exact_kth = flat.search(queries, k)[0][:, -1]  # exact ground truth, all threads
    out["exact_s"] = time.perf_counter() - start
    del flat
    start = time.perf_counter()
    index = CodeIndex.build("ivf", 64, np.arange(n, dtype=np.int64), database)
    out["build_s"] = time.perf_counter() - start
    del database
    found, ms = [], []
    for q in queries:
        t = time.perf_counter()
        dist, _ = index.search(q, k)
        ms.append((time.perf_counter() - t) * 1000)
        found.append(dist)
    out |= {"nlist": int(index.index.nlist), "nprobe": index.probes(k), "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "recall_at_k": recall_at_k(found, exact_kth, k),
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "recall_note": "fraction of the k results within the exact k-th distance (ties counted as hits)"}
    print(f"IVF at {n:,}: {out}", flush=True)
    return out


def _shown(path: Path) -> str:
    """A path as the results show it: relative to the repository when inside it (no machine paths)."""
    resolved = Path(path).absolute()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(path)


def optional_part(name: str, args) -> dict | None:
    """Run ``benchmarks/scale_<name>.py``'s ``measure(args)`` if that script exists."""
    try:
        module = importlib.import_module(f"scale_{name}")
    except ModuleNotFoundError:
        return None
    return module.measure(args) if hasattr(module, "measure") else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=ROOT / "runs/ucmd/model", help="a trained float32 model directory")
    p.add_argument("--data", help="UCMD (default: $RSHASH_DATA, else ../shared/data/UCMerced_LandUse)")
    p.add_argument("--parts", default="speed,encoder,ray,milvus,ivf")
    p.add_argument("--images", type=int, default=None, help="images indexed for the encoder part's rates (default all)")
    p.add_argument("--ivf-n", type=int, default=100_000_000, help="codes in the one-node IVF measurement")
    p.add_argument("--resume", action="store_true", help="keep the existing JSON's parts that this run skips")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/scale.json")
    args = p.parse_args(argv)
    parts = set(args.parts.split(","))
    started = time.perf_counter()
    earlier = json.loads(args.out.read_text()) if args.resume and args.out.is_file() else {}
    command = "python benchmarks/scale.py " + " ".join(sys.argv[1:] if argv is None else argv)
    results: dict = {k: v for k, v in earlier.items() if k in PARTS} | {
        "command": command if not earlier else f"{earlier['command']}; then {command}",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_average_at_start": list(os.getloadavg())},
        "model": _shown(args.model), "data": "UC Merced Land Use (2100 images); protocol A = the model's split.json",
    }
    if "speed" in parts:
        results["speed"] = speed_part(args.model, load_records(resolve_data_dir(args.data)))
    if "encoder" in parts:
        results["encoder"] = encoder_part(args.model, resolve_data_dir(args.data), args.images)
    for name in ("ray", "milvus"):
        if name in parts:
            results[name] = optional_part(name, args)
    if "ivf" in parts:
        results["ivf"] = ivf_part(args.ivf_n)
    speed = results.get("speed") or {}
    enc, ray, milvus = results.get("encoder") or {}, results.get("ray") or {}, results.get("milvus") or {}
    ivf = results.get("ivf") or {}
    at_1e8 = ivf.get("n") == 100_000_000
    results["seconds"] = round(time.perf_counter() - started, 1)
    int8 = {k: v for k, v in enc.items() if k.startswith("int8:")}
    int8_best = min(int8.values(), key=lambda e: max(e["protocol_A_64_map_all_drop"].values()), default=None)
    realistic_file = ROOT / "benchmarks/results/scale_realistic.json"  # benchmarks/scale_realistic.py's own run
    realistic = json.loads(realistic_file.read_text()).get("targets", {}) if realistic_file.is_file() else {}
    ray_file = ROOT / "benchmarks/results/scale_ray.json"  # benchmarks/scale_ray.py --raster-parts local-ray,cluster
    ray_rasters = json.loads(ray_file.read_text()) if ray_file.is_file() else {}
    local_ray, cluster = ray_rasters.get("rasters") or {}, ray_rasters.get("rasters_two_process_cluster") or {}
    milvus_file = ROOT / "benchmarks/results/scale_milvus.json"  # benchmarks/scale_milvus.py's own run (reader)
    milvus_run = json.loads(milvus_file.read_text()) if milvus_file.is_file() else {}
    results["targets"] = {
        "encode_ceiling_images_per_s": speed.get("ceiling_images_per_s"),
        "encode_images_per_s": speed.get("end_to_end_images_per_s"),
        "encode_cold_images_per_s": speed.get("end_to_end_cold_images_per_s"),
        "encode_vs_allowed": speed.get("end_to_end_vs_allowed"),
        "default_encoder": DEFAULT_ENCODER,
        "protocol_A_default_drop": 0.0 if DEFAULT_ENCODER == "float32" else None,
        "same_place_recall10_drop": 0.0 if DEFAULT_ENCODER == "float32" else None,
        "int8_protocol_A_drop": max(int8_best["protocol_A_64_map_all_drop"].values()) if int8_best else None,
        "int8_speedup": int8_best["speedup"] if int8_best else None,
        "two_stage_1e7_recall_at_20": realistic.get("two_stage_1e7_recall_at_20"),
        "two_stage_1e7_p50_ms": realistic.get("two_stage_1e7_p50_ms"),
        "two_stage_1e7_recall_at_20_with_ties": realistic.get("two_stage_1e7_recall_at_20_with_ties"),
        "two_stage_1e7_p50_ms_with_ties": realistic.get("two_stage_1e7_p50_ms_with_ties"),
        "search_anon_rss_gb_1e7": realistic.get("search_anon_rss_gb_1e7"),
        "realistic_generator_accepted": realistic.get("generator_accepted"),
        "ray_vs_local_throughput_ratio": local_ray.get("ray_vs_local_throughput_ratio"),
        "ray_raster_chips": local_ray.get("chips"),
        "ray_raster_chips_identical": local_ray.get("ray_raster_chips_identical"),
        "ray_two_process_cluster_ratio": cluster.get("ray_vs_local_throughput_ratio"),
        "ray_images_vs_local_throughput_ratio": ray_rasters.get("ray_vs_local_throughput_ratio"),
        "ray_codes_identical": ray.get("ray_codes_identical"),
        "milvus_recall_at_20": milvus.get("milvus_recall_at_20"),
        "milvus_first_search_ms_1e6": milvus.get("milvus_first_search_ms_1e6",
                                                 milvus_run.get("milvus_first_search_ms_1e6")),
        "milvus_reader_rss_gb_1e6": milvus.get("milvus_reader_rss_gb_1e6", milvus_run.get("milvus_reader_rss_gb_1e6")),
        "ivf_1e8_p50_ms": ivf.get("p50_ms") if at_1e8 else None,
        "ivf_1e8_recall_at_20": ivf.get("recall_at_k") if at_1e8 else None,
    }
    results["goals"] = GOALS
    results["targets_note"] = (
        "encode_*: the default encoder (float32) on all UCMD images (speed part: ceiling on pre-decoded pixels, end "
        "to end through Index.add_paths, warm median of 3, cold = first run of the process). protocol_A_default_drop: "
        "0 because the default encoder is the float one (same_place_recall10_drop likewise); int8_protocol_A_drop / int8_speedup: of the int8 variant with "
        "the smallest drop (the larger of its Hamming and re-ranked protocol A mAP@all drops; one model, seed 0), "
        "end-to-end rate against the float encoder's in the same part. IVF: "
        "the ivf part (None: not run at 10^8). two_stage_1e7_*, search_anon_rss_gb_1e7: copied from "
        "benchmarks/results/scale_realistic.json (python benchmarks/scale_realistic.py). ray_*: from "
        "benchmarks/results/scale_ray.json (python benchmarks/scale_ray.py --n 2100 --raster-parts local-ray,cluster): "
        "raster chips of the shared rasters (startup excluded), images for ray_images_*. milvus_*_1e6: from "
        "benchmarks/results/scale_milvus.json (python benchmarks/scale_milvus.py: an index of 10^6 items on Milvus "
        "Lite opened by a fresh process; None = not measured). Server CPU and capacity: benchmarks/results/serve_load.json.")
    atomic_write_text(args.out, json.dumps(results, indent=1))
    print(json.dumps(results["targets"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
