"""Search and indexing speed: the numbers behind the index kinds' defaults.

Part 1 (codes only): N clustered 64-bit codes (``--bits 128|256`` for longer codes) (a few thousand centres + per-centre bit
noise, like a trained model's), 1000 queries drawn near the data, k=20, one thread.
Per-query latency (median, p99) of a numpy XOR+popcount scan, faiss IndexBinaryFlat,
rshash's exact ``flat`` kind, and the sub-linear kinds (``multihash``, ``ivf`` at
several nprobe), with recall@20 against exact search (a result counts as a hit
when its distance is within the true 20th distance: Hamming ties are common),
speedup vs faiss flat, build time and bytes per code.

Part 2 (end to end): ``rshash index`` on an image folder (images/s, decoding
included), then one image query as a fresh ``rshash search`` process (cold) vs
``Index.search`` in a warm process.

    python benchmarks/search_speed.py                       # 1M codes + UCMD end to end
    python benchmarks/search_speed.py --sizes 1000000,10000000
    python benchmarks/search_speed.py --sizes 100000 --max-images 200   # quick check
    python benchmarks/search_speed.py --bits 128 --sizes 10000000 --skip-e2e   # -> search_speed.bits128.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import faiss
import numpy as np

from rshash.index import Index
from rshash.index.backends.base import IVF_CANDIDATES_PER_RESULT, IVF_NPROBE, ivf_lists
from rshash.index.backends.faiss import CodeIndex, IVFIndex
from rshash.index.synthetic import ClusteredCodes

RESULTS = Path(__file__).parent / "results" / "search_speed.json"
BITS = 64
CENTRES = 4000
#: Fixed nprobe values compared with the automatic choice (None: what rshash uses).
NPROBES = (None, 8, 16, 32, 64, 128)
RECALL_GOAL = 0.99


# ---------------------------------------------------------------------------- measuring


def latencies(search: Callable[[object], object], queries: Sequence) -> dict:
    """Per-query wall time of ``search(query)``, one query at a time: median and p99 in ms."""
    return interleaved_latencies({"_": search}, queries)["_"]


def interleaved_latencies(
    searches: dict[str, Callable[[object], object]], queries: Sequence, block: int = 50
) -> dict[str, dict]:
    """Like :func:`latencies` for several methods, taking turns every ``block`` queries.

    Turns spread load from other processes on a shared machine evenly over the methods
    (fair ratios), while each method still runs warm, as in a process serving one kind
    of index; alternating every single query would instead charge whichever method
    follows a flat scan for the caches that scan evicted.
    """
    times: dict[str, list[float]] = {name: [] for name in searches}
    for start in range(0, len(queries), block):
        for name, search in searches.items():
            search(queries[start])  # warm up after the previous method's turn
            for q in queries[start : start + block]:
                t0 = time.perf_counter()
                search(q)
                times[name].append(time.perf_counter() - t0)
    return {name: _summary(np.array(t) * 1e3) for name, t in times.items()}


def _summary(ms: np.ndarray) -> dict:
    return {"median_ms": round(float(np.median(ms)), 4), "p99_ms": round(float(np.percentile(ms, 99)), 4)}


def recall_at_k(found: list[np.ndarray], exact_kth: np.ndarray, k: int) -> float:
    """Mean fraction of k results within the exact k-th distance (tie-aware recall@k)."""
    return round(float(np.mean([min(k, np.count_nonzero(d <= t)) / k for d, t in zip(found, exact_kth)])), 5)


def numpy_scan(database: np.ndarray, k: int) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Exact k-NN with XOR + np.bitwise_count on uint64 words; top-k via a distance histogram."""
    words = np.ascontiguousarray(database).view(np.uint64)  # (n, bits / 64)
    bits = 64 * words.shape[1]

    def search(query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q = query.view(np.uint64)
        dist = np.bitwise_count(words[:, 0] ^ q[0]).astype(np.int32)
        for w in range(1, words.shape[1]):
            dist += np.bitwise_count(words[:, w] ^ q[w])
        cutoff = int(np.searchsorted(np.cumsum(np.bincount(dist, minlength=bits + 1)), k))
        near = np.flatnonzero(dist <= cutoff)
        order = near[np.argsort(dist[near], kind="stable")][:k]
        return dist[order], order

    return search


def serialized_bytes(index: faiss.IndexBinary) -> int:
    return int(faiss.serialize_index_binary(index).size)


def _searcher(index: CodeIndex, k: int, nprobe: int | None) -> Callable[[np.ndarray], object]:
    """``index.search`` with the IVF nprobe fixed (``None``: rshash's automatic choice)."""

    def search(q: np.ndarray) -> object:
        if isinstance(index, IVFIndex):
            index.nprobe = nprobe
        return index.search(q, k)

    return search


def bench_size(n: int, n_queries: int, k: int, seed: int, bits: int = BITS) -> dict:
    """Part 1 for one database size: build everything, check recall, then time interleaved."""
    print(f"\n== {n:,} codes of {bits} bits", flush=True)
    source = ClusteredCodes(bits=bits, centres=CENTRES, seed=seed)
    start = time.perf_counter()
    database, queries = source.sample(n), source.sample(n_queries)
    out: dict = {"n": n, "generate_s": round(time.perf_counter() - start, 2)}

    start = time.perf_counter()
    flat = faiss.IndexBinaryFlat(bits)
    flat.add(database)
    build_s = round(time.perf_counter() - start, 3)
    rows = {"faiss_flat": {"build_s": build_s, "bytes_per_code": serialized_bytes(flat) / n}}
    searches = {"faiss_flat": lambda q: flat.search(q[None], k), "numpy_scan": numpy_scan(database, k)}
    exact_kth = flat.search(queries, k)[0][:, -1]
    rows["numpy_scan"] = {"recall_at_k": recall_at_k([searches["numpy_scan"](q)[0] for q in queries[:100]],
                                                     exact_kth[:100], k)}
    for kind, settings in (("flat", [None]), ("multihash", [None]), ("ivf", NPROBES)):
        start = time.perf_counter()
        index = CodeIndex.build(kind, bits, np.arange(n, dtype=np.int64), database)
        build = {"build_s": round(time.perf_counter() - start, 2),
                 "bytes_per_code": round(serialized_bytes(index.index) / n, 2)}
        for nprobe in settings:
            name = f"rshash_{kind}" + ("" if nprobe is None else f"_nprobe{nprobe}")
            searches[name] = _searcher(index, k, nprobe)
            rows[name] = build | {"recall_at_k": recall_at_k([searches[name](q)[0] for q in queries], exact_kth, k)}
            if isinstance(index, IVFIndex):
                rows[name] |= {"nlist": int(index.index.nlist), "nprobe": index.probes(k)}
        print(f"built {kind} in {build['build_s']} s", flush=True)

    timed = interleaved_latencies(searches, queries)
    flat_ms = timed["faiss_flat"]["median_ms"]
    for name, row in rows.items():
        row |= timed[name] | {"speedup_vs_faiss_flat": round(flat_ms / timed[name]["median_ms"], 1)}
        print(f"{name:24s}", row, flush=True)
    out["methods"] = rows
    sublinear = {name: r for name, r in rows.items()
                 if name.startswith(("rshash_ivf", "rshash_multihash")) and r["recall_at_k"] >= RECALL_GOAL}
    best = min(sublinear, key=lambda name: sublinear[name]["median_ms"]) if sublinear else None
    out["best_sublinear_with_recall_0.99"] = {"name": best, **(sublinear[best] if best else {})}
    return out


# ---------------------------------------------------------------------------- end to end


def default_images() -> Path | None:
    shared = Path(__file__).resolve().parents[2] / "shared/data/UCMerced_LandUse"
    for candidate in (os.environ.get("RSHASH_DATA"), shared):
        if candidate and Path(candidate).exists():
            return Path(candidate)
    return None


def random_head_model(workdir: Path) -> Path:
    """An untrained hash head on the ImageNet backbone: same cost per image as a trained model."""
    from rshash.model import HashingModel, ModelConfig
    from rshash.model_dir import save_model_dir

    path = workdir / "random-head-model"
    save_model_dir(path, HashingModel(ModelConfig(bits=BITS)))
    return path


def subset_manifest(images: Path, limit: int, workdir: Path) -> Path:
    """A CSV manifest of the first ``limit`` images (evenly over classes via a stride)."""
    from rshash.data.datasets import load_records

    records = load_records(images)
    step = max(1, len(records) // limit)
    manifest = workdir / "subset.csv"
    with manifest.open("w", newline="") as fh:
        csv.writer(fh).writerows([r.path, r.label or ""] for r in records[::step][:limit])
    return manifest


def run_cli(args: list[str]) -> tuple[float, str]:
    """Wall time and stdout of ``rshash ARGS`` in a fresh process."""
    env = os.environ | {"RSHASH_PROGRESS": "0"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "rshash.cli", *args], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"rshash {' '.join(args)} failed: {done.stderr[-2000:]}")
    return wall, done.stdout


def bench_end_to_end(images: Path, model: Path | None, max_images: int | None, k: int) -> dict:
    """Part 2: indexing throughput and one-image search latency, cold process vs warm API."""
    with tempfile.TemporaryDirectory(prefix="rshash-bench-") as tmp:
        workdir = Path(tmp)
        out: dict = {"images": str(images)}
        if model is None:
            model = random_head_model(workdir)
            out["model"] = "random hash head on the ImageNet backbone, created in a temp dir (no --model given)"
        else:
            out["model"] = str(model)
        source = subset_manifest(images, max_images, workdir) if max_images else images
        index_dir = workdir / "index"
        wall, stdout = run_cli(["index", "--model", str(model), "--images", str(source), "--out", str(index_dir)])
        with Index.open(index_dir) as index:
            n = len(index)
            query = index.get(1).path
            out["index"] = {
                "command": f"rshash index --model MODEL --images {source} --out INDEX_DIR",
                "images_indexed": n,
                "wall_s": round(wall, 2),
                "images_per_s": round(n / wall, 1),
                "summary": stdout.strip().splitlines()[0],
                "bytes_per_image": index.stats()["bytes_per_image"],
            }
            print("rshash index", out["index"], flush=True)
            cold = [run_cli(["search", "--index", str(index_dir), query, "--k", str(k), "--json"])[0] for _ in range(3)]
            out["search_cold_process_s"] = {
                "median": round(statistics.median(cold), 3),
                "runs": [round(c, 3) for c in cold],
            }
            index.search(query, k)  # load the model and the faiss cache
            out["search_warm_api_image_query"] = latencies(lambda q: index.search(q, k), [query] * 50)
            out["search_warm_api_code_query"] = latencies(lambda q: index.search(q, k), [index.code_of(1)] * 200)
        print("search", {key: v for key, v in out.items() if key.startswith("search")}, flush=True)
        return out


# ---------------------------------------------------------------------------- report


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else (
        platform.processor())
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "faiss": faiss.__version__,
        "faiss_threads": 1,
    }


def goals(codes: dict, e2e: dict | None) -> dict:
    """The issue's targets, checked against what was measured (None: not measured)."""
    exact = {
        n: r["methods"]["rshash_flat"]["median_ms"] <= 1.1 * r["methods"]["faiss_flat"]["median_ms"]
        for n, r in codes.items()
    }
    ivf_10m = codes.get("10000000", {}).get("methods", {}).get("rshash_ivf")  # the default users get
    return {
        "exact_as_fast_as_faiss_flat (within 10%)": exact,
        "ivf_default_50x_faster_than_flat_at_10M_with_recall_0.99": (
            None if ivf_10m is None
            else ivf_10m["speedup_vs_faiss_flat"] >= 50 and ivf_10m["recall_at_k"] >= RECALL_GOAL
        ),
        "indexing_at_least_60_images_per_s": None if e2e is None else e2e["index"]["images_per_s"] >= 60,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000000", help="comma-separated database sizes (e.g. 1000000,10000000)")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bits", type=int, default=BITS, choices=(64, 128, 256),
                        help="code length of part 1 (default 64; others write search_speed.bits<N>.json)")
    parser.add_argument("--images", type=Path, help="image folder or manifest for the end-to-end part "
                        "(default: $RSHASH_DATA or ../shared/data/UCMerced_LandUse)")
    parser.add_argument("--model", type=Path, help="model directory (default: a random-head model in a temp dir)")
    parser.add_argument("--max-images", type=int, help="index only this many images end to end")
    parser.add_argument("--skip-e2e", action="store_true", help="codes only")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    args.out = args.out or (RESULTS if args.bits == BITS else RESULTS.with_name(f"search_speed.bits{args.bits}.json"))

    faiss.omp_set_num_threads(1)
    report: dict = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/search_speed.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine(),
        "settings": {"bits": args.bits, "centres": CENTRES, "queries": args.queries, "k": args.k,
                     "ivf_nprobe_rule": f"max({IVF_NPROBE}, lists holding {IVF_CANDIDATES_PER_RESULT} * k codes)",
                     "ivf_lists_at_sizes": {}},
    }
    sizes = [int(s) for s in args.sizes.split(",") if s]
    report["settings"]["ivf_lists_at_sizes"] = {str(n): ivf_lists(n) for n in sizes}
    report["codes"] = {str(n): bench_size(n, args.queries, args.k, args.seed, args.bits) for n in sizes}

    images = args.images or default_images()
    e2e = None
    if args.skip_e2e or images is None:
        report["end_to_end"] = "skipped" + ("" if args.skip_e2e else ": no image folder (--images or RSHASH_DATA)")
    else:
        e2e = report["end_to_end"] = bench_end_to_end(images, args.model, args.max_images, args.k)
    report["goals"] = goals(report["codes"], e2e)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"\nwrote {args.out}\n{json.dumps(report['goals'], indent=1)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
