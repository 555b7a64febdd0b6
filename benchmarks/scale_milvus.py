"""Milvus Lite (BIN_FLAT, HAMMING) against faiss flat on the same clustered 64-bit codes.

N codes from :class:`rshash.index.synthetic.ClusteredCodes` (4000 centres, per-centre bit noise, like a
trained model's) and ``--queries`` queries from the same distribution; both backends are driven through
rshash's code-backend interface (``CodeIndex.search`` / ``MilvusCodes.search``), one query at a time,
taking turns in blocks (``search_speed.interleaved_latencies``). ``milvus_recall_at_20`` counts a Milvus
result as a hit when its distance is within faiss flat's 20th distance (Hamming ties are common), so 1.0
means the same neighbours up to ties. Writes ``benchmarks/results/scale_milvus.json``; ``benchmarks/scale.py``
calls :func:`measure` for its ``milvus`` part.

    python benchmarks/scale_milvus.py                 # 10^6 codes, 200 queries, k=20
    python benchmarks/scale_milvus.py --n 100000      # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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
BITS = 64
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000, help="codes in the database (default 10^6)")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--note", default="", help="a remark stored with the results (e.g. why --n is smaller)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    started = time.perf_counter()
    results = {
        "command": "python benchmarks/scale_milvus.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_average_at_start": [round(x, 2) for x in os.getloadavg()]},
        **measure(n=args.n, n_queries=args.queries, k=args.k),
    }
    results["note"] = args.note
    results["seconds"] = round(time.perf_counter() - started, 1)
    atomic_write_text(args.out, json.dumps(results, indent=1))
    print(json.dumps({k: results[k] for k in ("n", "milvus_recall_at_20", "latency", "milvus_lite_build_s")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
