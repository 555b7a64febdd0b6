"""Milvus Lite (BIN_FLAT, HAMMING) against faiss flat on the same clustered codes (the default recipe's 128 bits),
and an index of 10^6 items on Milvus opened by a fresh reading process.

N codes from :class:`rshash.index.synthetic.ClusteredCodes` (4000 centres, per-centre bit noise, like a
trained model's) and ``--queries`` queries from the same distribution; both backends are driven through
rshash's code-backend interface (``CodeIndex.search`` / ``MilvusCodes.search``), one query at a time,
taking turns in blocks (``search_speed.interleaved_latencies``). ``milvus_recall_at_20`` counts a Milvus
result as a hit when its distance is within faiss flat's 20th distance (Hamming ties are common), so 1.0
means the same neighbours up to ties. Writes ``benchmarks/results/scale_milvus.json``; ``benchmarks/scale.py``
calls :func:`measure` for its ``milvus`` part.

**Reader** (:func:`reader_part`): an rshash index of ``--n`` items (generated codes, random int8 descriptors,
rows written straight into its SQLite store) on the Milvus backend (Lite, ``milvus.db`` in the index directory)
is built by a writing process (its first search builds the collection, records its digest and saves the vector
table memory-mapped), then opened by a fresh process that searches by id (two-stage: Hamming shortlist from
Milvus, re-rank from the memory-mapped table): ``milvus_first_search_ms_1e6`` is that process's first search
once connected to a server that has the collection loaded (Milvus Lite starts its server with the process and
loads the collection on first use: both timed apart, ``connect_ms`` and ``load_collection_ms``; a Milvus server
has done both already), ``open_to_first_results_ms`` everything from ``Index.open``; ``milvus_reader_rss_gb_1e6``
its resident memory after 200 searches
(``VmRSS``; its own anonymous memory and the file pages of the mapped table beside it; the Milvus Lite server
process, a child of the reader, reported separately).

    python benchmarks/scale_milvus.py                 # 10^6 codes, 200 queries, k=20
    python benchmarks/scale_milvus.py --n 100000      # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from search_speed import interleaved_latencies, recall_at_k  # noqa: E402

from rshash.index.backends.faiss import CodeIndex  # noqa: E402
from rshash.index.synthetic import ClusteredCodes  # noqa: E402
from rshash.io_utils import atomic_write_text  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "scale_milvus.json"
#: The default recipe's code length (rshash.training.hashing.DEFAULT_BITS, checked in main: importing it here
#: would load torch into the reading process, whose memory is measured).
BITS = 128
DIMS = 128
READER_SEARCHES = 200
CENTRES = 4000


def _latency(summary: dict) -> dict:
    return {"p50_ms": summary["median_ms"], "p99_ms": summary["p99_ms"]}


def measure(args: argparse.Namespace | None = None, n: int = 1_000_000, n_queries: int = 200, k: int = 20,
            seed: int = 0) -> dict:
    """Build both backends over ``n`` codes and compare ``n_queries`` k-NN searches (``args`` may carry
    ``milvus_n``, ``milvus_queries``: how benchmarks/scale.py passes them)."""
    from rshash.index.backends.milvus import MilvusBackend

    n = int(getattr(args, "milvus_n", None) or n)
    n_queries = int(getattr(args, "milvus_queries", None) or n_queries)
    data = ClusteredCodes(bits=BITS, centres=CENTRES, seed=seed)
    codes, queries = data.sample(n), data.sample(n_queries)
    ids = np.arange(1, n + 1, dtype=np.int64)
    out: dict = {"n": n, "queries": n_queries, "k": k, "bits": BITS, "centres": CENTRES, "seed": seed}

    t0 = time.perf_counter()
    flat = CodeIndex.build("flat", BITS, ids, codes)
    out["faiss_flat_build_s"] = round(time.perf_counter() - t0, 2)
    with tempfile.TemporaryDirectory(prefix="rshash-milvus-") as tmp:
        backend = MilvusBackend(str(Path(tmp) / "bench.db"), "bench")
        try:
            t0 = time.perf_counter()
            milvus = backend.build("flat", BITS, ids, codes)
            out["milvus_lite_build_s"] = round(time.perf_counter() - t0, 2)
            out["milvus_lite_rows"] = milvus.ntotal

            exact = [flat.search(q, k) for q in queries]
            found = [milvus.search(q, k) for q in queries]
            out["milvus_recall_at_20"] = recall_at_k([d for d, _ in found], np.array([d[-1] for d, _ in exact]), k)
            out["distances_equal_per_rank"] = all(np.array_equal(f[0], e[0]) for f, e in zip(found, exact))
            out["ids_equal_fraction"] = round(float(np.mean([np.array_equal(f[1], e[1]) for f, e in zip(found, exact)])), 4)

            timed = interleaved_latencies({"faiss_flat": lambda q: flat.search(q, k),
                                           "milvus_lite_bin_flat": lambda q: milvus.search(q, k)}, list(queries))
        finally:
            backend.close()
    out["latency"] = {name: _latency(summary) for name, summary in timed.items()}
    out["milvus_vs_faiss_p50"] = round(out["latency"]["milvus_lite_bin_flat"]["p50_ms"]
                                       / max(out["latency"]["faiss_flat"]["p50_ms"], 1e-9), 2)
    out["versions"] = {p: version(p) for p in ("pymilvus", "milvus-lite", "faiss-cpu")}
    out["notes"] = ("Milvus Lite runs as a local server process (gRPC over a unix socket) searching BIN_FLAT; "
                    "faiss flat is rshash's embedded IndexBinaryFlat, one thread. Latency = one query per call, "
                    "through rshash's backend interface, including the client round trip for Milvus.")
    return out


def build_index(path: Path, n: int, seed: int = 0) -> dict:
    """An index of ``n`` generated items on Milvus Lite in ``path``, built and searched once by this process."""
    from rshash.index import Index
    from rshash.index.store import NewImage
    from rshash.model import HashingModel, ModelConfig
    from rshash.model_dir import save_model_dir
    from rshash.progress import progress_bar

    save_model_dir(path.parent / "model", HashingModel(ModelConfig(bits=BITS, descriptor_dims=DIMS)))
    Index.create(path, path.parent / "model", backend="milvus").close()
    data, rng = ClusteredCodes(bits=BITS, centres=CENTRES, seed=seed), np.random.default_rng(seed)
    started = time.perf_counter()
    with Index.open(path) as index, progress_bar(total=n, desc="rows", unit="row") as bar:
        for start in range(0, n, 50_000):
            m = min(50_000, n - start)
            codes, desc = data.sample(m), rng.integers(-127, 128, size=(m, DIMS), dtype=np.int8)
            index._store.add([NewImage(f"/synthetic/{start + i}.png", None, 1, 1, "0" * 64, "2026-01-01",
                                       codes[i].tobytes(), desc[i].tobytes()) for i in range(m)])
            bar.update(m)
        rows_s = time.perf_counter() - started
        index.search(1, k=20)  # the writer's first search: builds the collection, saves the table
    return {"rows_s": round(rows_s, 1), "build_s": round(time.perf_counter() - started - rows_s, 1)}


def _status_kb(pid: int | str) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0])
    return out


def reader(path: Path) -> dict:
    """In a fresh process: open the index, time the first search by id and ``READER_SEARCHES`` more; memory."""
    t_import = time.perf_counter()
    from rshash.index import Index
    from rshash.index.backends import milvus  # noqa: F401 (imported when the index is opened: timed apart)

    rng = np.random.default_rng(1)
    t0 = time.perf_counter()
    index = Index.open(path)
    t1 = time.perf_counter()
    backends = index._live._backends
    client = backends.client  # connects (Milvus Lite: starts its server process): timed apart
    t_connected = time.perf_counter()
    client.load_collection(backends.collection)  # what a running Milvus server holds already: timed apart
    t_loaded = time.perf_counter()
    first = index.search(1, k=20)
    t2 = time.perf_counter()
    n = len(index)
    latencies = []
    for i in rng.integers(1, n + 1, READER_SEARCHES).tolist():
        s = time.perf_counter()
        index.search(int(i), k=20)
        latencies.append((time.perf_counter() - s) * 1000)
    me = _status_kb("self")
    children = [int(c) for t in Path("/proc/self/task").iterdir() for c in (t / "children").read_text().split()]
    servers = {str(c): _status_kb(c) for c in children if Path(f"/proc/{c}").exists()}
    table = index._live.table
    out = {"items": n, "import_ms": round((t0 - t_import) * 1000, 1), "open_ms": round((t1 - t0) * 1000, 1),
           "connect_ms": round((t_connected - t1) * 1000, 1), "load_collection_ms": round((t_loaded - t_connected) * 1000, 1),
           "first_search_ms": round((t2 - t_loaded) * 1000, 1),
           "open_to_first_results_ms": round((t2 - t0) * 1000, 1), "first_results": len(first),
           "table_memory_mapped": isinstance(table.descriptors, np.memmap),
           "search_p50_ms": round(float(np.percentile(latencies, 50)), 2),
           "search_p99_ms": round(float(np.percentile(latencies, 99)), 2),
           "rss_gb": round(me["VmRSS"] / 2**20, 3), "rss_anon_gb": round(me["RssAnon"] / 2**20, 3),
           "rss_file_gb": round(me["RssFile"] / 2**20, 3),
           "milvus_server_rss_gb": {pid: round(v["VmRSS"] / 2**20, 3) for pid, v in servers.items()}}
    index.close()
    return out


def _run_json(args: list[str]) -> dict:
    """This script run with ``args`` in a fresh process: the JSON object its last output line holds."""
    proc = subprocess.run([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def reader_part(n: int, seed: int = 0) -> dict:
    """Build an index of ``n`` items on Milvus Lite, then open and search it from a fresh process."""
    with tempfile.TemporaryDirectory(prefix="rshash-milvus-index-") as tmp:
        path = Path(tmp) / "index"
        # Each in its own process: Milvus Lite serves one .db file to one process at a time.
        built, measured = (_run_json(["--build", str(path), "--n", str(n)]), _run_json(["--reader", str(path)]))
    return {"n": n, "bits": BITS, "descriptor_dims": DIMS, "writer": built, "reader": measured,
            "milvus_first_search_ms": measured["first_search_ms"], "milvus_reader_rss_gb": measured["rss_gb"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000, help="codes in the database (default 10^6)")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--note", default="", help="a remark stored with the results (e.g. why --n is smaller)")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--parts", default="compare,reader", help="compare (Milvus vs faiss), reader (an index opened "
                   "by a fresh process); default both")
    p.add_argument("--resume", action="store_true", help="keep the existing JSON's fields this run does not write")
    p.add_argument("--reader", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--build", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.build is not None:  # the writing process of reader_part
        print(json.dumps(build_index(args.build, args.n)))
        return 0
    if args.reader is not None:  # the fresh reading process of reader_part
        print(json.dumps(reader(args.reader)))
        return 0
    from rshash.training.hashing import DEFAULT_BITS

    if BITS != DEFAULT_BITS:
        raise SystemExit(f"BITS ({BITS}) is not the default recipe's code length ({DEFAULT_BITS}): update it")
    parts = set(args.parts.split(","))
    started = time.perf_counter()
    results = json.loads(args.out.read_text()) if args.resume and args.out.is_file() else {}
    results |= {
        "command": "python benchmarks/scale_milvus.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_average_at_start": [round(x, 2) for x in os.getloadavg()]},
    }
    if "compare" in parts:
        results |= measure(n=args.n, n_queries=args.queries, k=args.k)
    if "reader" in parts:
        reader_results = reader_part(args.n)
        results["reader"] = reader_results
        results["milvus_first_search_ms_1e6" if args.n == 10**6 else "milvus_first_search_ms"] = \
            reader_results["milvus_first_search_ms"]
        results["milvus_reader_rss_gb_1e6" if args.n == 10**6 else "milvus_reader_rss_gb"] = \
            reader_results["milvus_reader_rss_gb"]
    results["note"] = args.note
    results["seconds"] = round(time.perf_counter() - started, 1)
    atomic_write_text(args.out, json.dumps(results, indent=1))
    print(json.dumps({k: results.get(k) for k in ("n", "milvus_recall_at_20", "latency", "milvus_lite_build_s",
                                                   "reader")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
