"""Scale benchmark (issue 12): the int8 encoder against the float one, and the Ray and Milvus measurements.

    python benchmarks/scale.py --model runs/ucmd/model [--parts encoder,ray,milvus] [--images 600]

* **encoder**: ``rshash quantize`` of the model (calibration: 256 images of its training split), then for
  the float and the int8 encoder: end-to-end indexing throughput (read, checksum, decode, resize, encode,
  commit; ``Index.add_paths`` on the first N UCMD images, 2 ONNX Runtime threads) and protocol A on the
  model's own split with the encoder on the real files (mAP@all Hamming and re-ranked), plus the share of
  code bits and the descriptor cosine between the two encoders.
* **ivf**: one node, rshash's IVF kind over ``--ivf-n`` (10^8) clustered 64-bit codes: build time, p50/p99 per
  query (one thread), recall@20 against an exact scan, peak RSS.
* **ray** / **milvus**: the measurements of ``benchmarks/scale_ray.py`` / ``benchmarks/scale_milvus.py``,
  run from here when those scripts exist (their own result files hold the details).

Writes benchmarks/results/scale.json with the ``targets`` object of issue 12 (``None`` = not measured).
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
from rshash.quantize import calibration_paths, quantize_model  # noqa: E402


def index_rate(model: Path, records, work: Path) -> float:
    """Images per second through ``Index.add_paths`` (everything a user's ``rshash index`` does)."""
    with Index.create(work, model) as index:
        index.encoder  # noqa: B018 - load the session before timing
        start = time.perf_counter()
        report = index.add_paths(records, progress=False)
        seconds = time.perf_counter() - start
    return report.added / seconds


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


def encoder_part(model: Path, data: Path, n_images: int) -> dict:
    records = load_records(data)
    with tempfile.TemporaryDirectory() as tmp:
        int8 = Path(tmp) / "model-int8"
        start = time.perf_counter()
        quantize_model(model, int8, calibration_paths(model, 256))
        quantize_s = time.perf_counter() - start
        out: dict = {"quantize_seconds": quantize_s, "calibration_images": 256, "index_images": n_images}
        for name, m in (("float32", model), ("int8", int8)):
            out[name] = {"index_images_per_s": index_rate(m, records[:n_images], Path(tmp) / f"index-{name}")}
            out[name]["protocol_A_64"], codes, desc = protocol_a(m, records)
            out[name]["_codes"], out[name]["_desc"] = codes, desc
            print(f"{name}: {out[name]['index_images_per_s']:.1f} img/s, protocol A {out[name]['protocol_A_64']}", flush=True)
    a, b = out["float32"], out["int8"]
    out["bits_differing_fraction"] = float((a.pop("_codes") != b.pop("_codes")).mean())
    out["descriptor_cosine_mean"] = float(np.mean(np.sum(a.pop("_desc") * b.pop("_desc"), axis=1)))
    out["protocol_A_64_map_all_drop"] = {k: a["protocol_A_64"][k] - b["protocol_A_64"][k] for k in ("hamming", "reranked")}
    out["speedup"] = b["index_images_per_s"] / a["index_images_per_s"]
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
    p.add_argument("--parts", default="encoder,ray,milvus,ivf")
    p.add_argument("--images", type=int, default=600, help="images indexed for the throughput figures")
    p.add_argument("--ivf-n", type=int, default=100_000_000, help="codes in the one-node IVF measurement")
    p.add_argument("--resume", action="store_true", help="keep the existing JSON's parts that this run skips")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/scale.json")
    args = p.parse_args(argv)
    parts = set(args.parts.split(","))
    started = time.perf_counter()
    earlier = json.loads(args.out.read_text()) if args.resume and args.out.is_file() else {}
    command = "python benchmarks/scale.py " + " ".join(sys.argv[1:] if argv is None else argv)
    results: dict = {k: v for k, v in earlier.items() if k in ("encoder", "ray", "milvus", "ivf")} | {
        "command": command if not earlier else f"{earlier['command']}; then {command}",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_average_at_start": list(os.getloadavg())},
        "model": _shown(args.model), "data": "UC Merced Land Use (2100 images); protocol A = the model's split.json",
    }
    if "encoder" in parts:
        results["encoder"] = encoder_part(args.model, resolve_data_dir(args.data), args.images)
    for name in ("ray", "milvus"):
        if name in parts:
            results[name] = optional_part(name, args)
    if "ivf" in parts:
        results["ivf"] = ivf_part(args.ivf_n)
    enc, ray, milvus = results.get("encoder") or {}, results.get("ray") or {}, results.get("milvus") or {}
    ivf = results.get("ivf") or {}
    at_1e8 = ivf.get("n") == 100_000_000
    results["seconds"] = round(time.perf_counter() - started, 1)
    results["targets"] = {
        "encode_images_per_s": (enc.get("float32") or {}).get("index_images_per_s"),
        "protocol_A_64_map_all_drop": (enc.get("protocol_A_64_map_all_drop") or {}).get("hamming"),
        "ray_vs_local_throughput_ratio": ray.get("ray_vs_local_throughput_ratio"),
        "ray_codes_identical": ray.get("ray_codes_identical"),
        "milvus_recall_at_20": milvus.get("milvus_recall_at_20"),
        "ivf_1e8_p50_ms": ivf.get("p50_ms") if at_1e8 else None,
        "ivf_1e8_recall_at_20": ivf.get("recall_at_k") if at_1e8 else None,
    }
    results["targets_note"] = (
        "encode_images_per_s is the default (float32) encoder end to end; the int8 encoder's rate is "
        "encoder.int8.index_images_per_s (not the default: rshash quantize makes it). protocol_A_64_map_all_drop = "
        "float minus int8, Hamming (re-ranked in encoder.protocol_A_64_map_all_drop). IVF: the ivf part (None: not run at 10^8).")
    atomic_write_text(args.out, json.dumps(results, indent=1))
    print(json.dumps(results["targets"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
