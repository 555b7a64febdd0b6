"""Load test of ``rshash serve``: N concurrent clients searching by id and by uploaded image.

Starts ``rshash serve`` on loopback (a separate process, as deployed; ``--workers`` processes)
over an index, then for each scenario runs N concurrent httpx clients until the duration or
the request budget is used up, and records client-side latency (p50 / p90 / p99 / max),
throughput, the server's own ``query_ms``, CPU per request (server and load generator)
and every error. Scenarios: search by id and search by upload with the clients sending
back to back (closed loop: saturation, where latency is mostly queueing, about
clients / throughput), and search by id paced at ``--paced-rate`` requests/s in total
(the load 32 people clicking through results would make), and search by upload paced at ``--upload-rate``.
The server's CPU per request (its processes only; the load generator runs in this process) comes from the
paced scenarios; a capacity sweep paces search by id at rising rates and reports the highest whose p99 stays
under 50 ms (``capacity``).
Goals: zero errors at 32 concurrent clients; p99 of search by id under 50 ms; server CPU per search by id
<= 1.5 ms and per upload <= 15 ms (issue 18).

The index is ``--index DIR`` (the real one: ``runs/ucmd/index``, built with the trained
model). Without it, a small index (``--max-images``, from UCMD or, failing that, synthetic
scenes) is built with ``--model`` or else a random-head model (ImageNet backbone +
untrained hash head: codes no good for retrieval, but as costly to compute and search).
The JSON's ``targets`` says whether the model was trained (``model_is_trained``).

    python benchmarks/serve_load.py --index runs/ucmd/index --workers 2   # the numbers to report
    python benchmarks/serve_load.py                                       # a 210-image random-head index
    python benchmarks/serve_load.py --quick                               # smoke test: a few seconds of load

Client and server share this machine's cores, so the numbers are a lower bound of
what the server alone sustains.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path

import httpx

RESULTS = Path(__file__).parent / "results" / "serve_load.json"
GOALS = {"clients": 32, "errors": 0, "p99_search_by_id_ms": 50.0,
         # issue 18: the server's own CPU per request (load generator excluded), from the paced scenarios
         "server_cpu_ms_per_search": 1.5, "server_cpu_ms_per_upload": 15.0}
#: Total rates (requests/s) of the capacity sweep: paced search by id, each for --capacity-duration seconds,
#: stopping at the first rate whose p99 is 50 ms or more (or with errors).
CAPACITY_RATES = (100, 200, 300, 400, 500, 600, 800, 1000)


# ---------------------------------------------------------------------------- the index


def build_index(work: Path, data: str | None, model: Path | None, max_images: int, bits: int) -> dict:
    """Index ``max_images`` images (balanced over classes) of UCMD, else synthetic scenes, into ``work/index``."""
    from rshash.data.datasets import DatasetError, load_records, resolve_data_dir
    from rshash.index import Index

    index_dir = work / "index"
    if model is None:
        model = work / "model"
        if not (model / "config.json").is_file():
            from rshash.model import HashingModel, ModelConfig
            from rshash.model_dir import save_model_dir

            print(f"random-head model ({bits} bits) -> {model}", flush=True)
            save_model_dir(model, HashingModel(ModelConfig(bits=bits)))
    try:
        source = resolve_data_dir(data)
    except DatasetError:
        if data is not None:
            raise
        from rshash.data.synthetic import make_synthetic_dataset

        source = work / "synthetic"
        make_synthetic_dataset(source, classes=6, per_class=max(1, max_images // 6), size=256)
    by_class: dict[str | None, list] = {}
    for r in load_records(source):
        by_class.setdefault(r.label, []).append(r)
    per_class = max(1, max_images // len(by_class))
    records = [r for rs in by_class.values() for r in rs[:per_class]]
    start = time.perf_counter()
    with Index.open_or_create(index_dir, model) as index:
        report = index.add_paths(records, progress=False)
        images = len(index)
    print(f"index {index_dir}: {images} images ({report.summary()}) in {time.perf_counter() - start:.1f}s", flush=True)
    return {
        "source": str(source),
        "add_report": {"added": report.added, "already_indexed": report.unchanged, "skipped": len(report.skipped)},
        "add_s": round(time.perf_counter() - start, 1),
    }


def model_is_trained(model_dir: Path) -> bool:
    """Whether ``model_dir`` came out of ``rshash train`` (its metrics hold the hashing phase)."""
    try:
        return "hashing" in json.loads((Path(model_dir) / "metrics.json").read_text())
    except (OSError, ValueError):
        return False


def describe_model(model_dir: Path, trained: bool) -> str:
    if trained:
        return f"trained model {Path(model_dir).name}"
    return "random-head model (ImageNet EfficientNet-Lite0 + untrained hash head)"


# ---------------------------------------------------------------------------- the server


class Server:
    """``rshash serve --port 0 --workers N`` in a child process, once every worker has started."""

    def __init__(self, index_dir: Path, model: Path | None, workers: int):
        args = [sys.executable, "-m", "rshash.cli", "serve", "--index", str(index_dir), "--port", "0",
                "--no-access-log", "--workers", str(workers)]
        if model is not None:
            args += ["--model", str(model)]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True).start()
        try:
            self.url = self._wait_until_serving(workers, deadline=time.monotonic() + 120)
        except BaseException:
            self.stop()
            raise

    def _wait_until_serving(self, workers: int, deadline: float) -> str:
        # Every worker started: else the clients' keep-alive connections all land on the first one ready.
        while sum("Application startup complete" in line for line in list(self.lines)) < workers:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("rshash serve did not start:\n" + "".join(self.lines))
            time.sleep(0.1)
        url = next(m[1] for line in list(self.lines) if (m := re.search(r"at (http://[\d.]+:\d+)/", line)))
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                    return url
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("rshash serve never became healthy:\n" + "".join(self.lines))
            time.sleep(0.2)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# ---------------------------------------------------------------------------- load


def percentile(values: list[float], q: float) -> float | None:
    """The nearest-rank percentile."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds so far of a process and its descendants (the workers) (Linux)."""
    stats: dict[int, tuple[int, float]] = {}  # pid -> (parent pid, CPU s)
    for f in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = f.read_text().rsplit(")", 1)[1].split()
            stats[int(f.parent.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
        except (OSError, IndexError, ValueError):
            continue  # exited meanwhile
    if pid not in stats:
        return None
    tree, grown = {pid}, True
    while grown:  # add children until none is left out
        children = {p for p, (parent, _) in stats.items() if parent in tree} - tree
        tree |= children
        grown = bool(children)
    return sum(stats[p][1] for p in tree)


#: The server's own CPU when idle (uvicorn's supervisor and timers), CPU s per wall s: measured once before the
#: scenarios and subtracted from each scenario's server CPU (``cpu_ms_per_request.server_net``).
IDLE_CPU = {"rate": 0.0}


def idle_cpu_rate(server_pid: int, seconds: float = 5.0) -> float:
    before = process_cpu_s(server_pid)
    time.sleep(seconds)
    after = process_cpu_s(server_pid)
    return 0.0 if before is None or after is None else (after - before) / seconds


def run_scenario(
    url: str, server_pid: int, clients: int, duration: float, max_requests: int, make_request, rate: float | None
) -> dict:
    """``clients`` threads, each with its own keep-alive connection, sending ``make_request(http, rng)``.

    Closed loop (``rate`` None): each client sends its next request as soon as the last one
    is answered, so latency includes queueing at saturation. Paced: the clients together
    send ``rate`` requests/s on a fixed schedule, and latency counts from the scheduled
    time (a late request is not excused: no coordinated omission).

    One thread per client with a synchronous httpx.Client: on 2 cores, httpx's AsyncClient
    with 32 connections spends ~3 ms of CPU per request (more than the server), this ~0.6 ms.
    """
    latencies: list[float] = []
    server_ms: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    sent = 0
    ready = threading.Barrier(clients + 1)
    go = threading.Event()
    interval = clients / rate if rate else 0.0
    t0 = deadline = 0.0

    def worker(n: int) -> None:
        nonlocal sent
        rng = random.Random(1000 + n)
        with httpx.Client(base_url=url, timeout=60) as http:
            try:
                make_request(http, rng)  # warm-up: opens the connection, fills caches; not counted
            except Exception:
                pass
            ready.wait()
            go.wait()
            scheduled = t0 + interval * n / clients
            while True:
                with lock:
                    if sent >= max_requests or time.perf_counter() >= deadline:
                        return
                    sent += 1
                if rate:
                    scheduled += interval
                    time.sleep(max(0.0, scheduled - time.perf_counter()))
                    begin = scheduled
                else:
                    begin = time.perf_counter()
                try:
                    r = make_request(http, rng)
                    elapsed = (time.perf_counter() - begin) * 1000
                    if r.status_code != 200:
                        error = f"HTTP {r.status_code}: {r.text[:200]}"
                    else:
                        error = None
                        query_ms = r.json()["query_ms"]
                except Exception as exc:  # timeouts, resets: all count as errors
                    error = f"{type(exc).__name__}: {exc}"[:200]
                with lock:
                    if error is None:
                        latencies.append(elapsed)
                        server_ms.append(query_ms)
                    else:
                        errors.append(error)

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(clients)]
    for t in threads:
        t.start()
    ready.wait()  # every client connected and warmed up
    server_cpu0, client_cpu0 = process_cpu_s(server_pid), time.process_time()
    t0 = time.perf_counter()
    deadline = t0 + duration
    go.set()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    server_cpu1, client_cpu1 = process_cpu_s(server_pid), time.process_time()
    done = len(latencies) + len(errors)
    return {
        "mode": f"paced at {rate:g} requests/s in total" if rate else "closed loop (back to back)",
        "clients": clients,
        "requests": done,
        "ok": len(latencies),
        "errors": len(errors),
        "error_samples": sorted(set(errors))[:5],
        "wall_s": round(wall, 2),
        "throughput_rps": round(len(latencies) / wall, 1) if wall else None,
        "latency_ms": {
            "p50": _r(percentile(latencies, 50)),
            "p90": _r(percentile(latencies, 90)),
            "p99": _r(percentile(latencies, 99)),
            "max": _r(max(latencies) if latencies else None),
            "mean": _r(statistics.fmean(latencies) if latencies else None),
        },
        "server_query_ms": {"p50": _r(percentile(server_ms, 50)), "p99": _r(percentile(server_ms, 99))},
        "cpu_ms_per_request": {
            "server": _r((server_cpu1 - server_cpu0) * 1000 / done) if done and server_cpu0 is not None else None,
            "server_net": _r((server_cpu1 - server_cpu0 - IDLE_CPU["rate"] * wall) * 1000 / done)
            if done and server_cpu0 is not None else None,
            "load_generator": _r((client_cpu1 - client_cpu0) * 1000 / done) if done else None,
        },
    }


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


def machine() -> dict:
    cpu = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                    if line.startswith("model name")), cpu)
    import fastapi
    import uvicorn

    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "fastapi": fastapi.__version__,
        "uvicorn": uvicorn.__version__,
        "httpx": httpx.__version__,
        "note": "load generator and server share this machine's cores",
    }


def server_stack(workers: int) -> dict:
    """How the server runs: processes, and uvicorn's HTTP parser and event loop ("auto" picks these)."""
    import importlib.util

    have = {name: importlib.util.find_spec(name) is not None for name in ("httptools", "uvloop")}
    return {"workers": workers, "http": "httptools" if have["httptools"] else "h11",
            "loop": "uvloop" if have["uvloop"] else "asyncio"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--index", type=Path, help="an existing index, e.g. runs/ucmd/index (default: build a small one)")
    p.add_argument("--model", type=Path, help="with --index: its model if the recorded one moved; else the model "
                   "to build with (default: a random-head model)")
    p.add_argument("--data", help="images for the built index (default: $RSHASH_DATA, else the shared UCMD, "
                   "else synthetic scenes)")
    p.add_argument("--max-images", type=int, default=210, help="images in the built index (default 210)")
    p.add_argument("--bits", type=int, default=64, help="code length of the random-head model (default 64)")
    p.add_argument("--work", type=Path, help="where to build the index (reused if there; default: a temp dir)")
    p.add_argument("--workers", type=int, default=1, help="rshash serve --workers (default 1)")
    p.add_argument("--clients", type=int, default=32, help="concurrent clients (default 32)")
    p.add_argument("--duration", type=float, default=20, help="seconds per scenario (default 20)")
    p.add_argument("--max-requests", type=int, default=20000, help="request budget per scenario (default 20000)")
    p.add_argument("--k", type=int, default=20, help="results per search (default 20)")
    p.add_argument("--no-rerank", action="store_true", help="search with rerank=false (Hamming order only)")
    p.add_argument("--uploads", type=int, default=50, help="distinct query images uploaded (default 50)")
    p.add_argument("--paced-rate", type=float, default=200,
                   help="also search by id at this total rate, requests/s (default 200; 0: skip)")
    p.add_argument("--upload-rate", type=float, default=20,
                   help="also search by upload at this total rate, requests/s (default 20; 0: skip)")
    p.add_argument("--capacity", action=argparse.BooleanOptionalAction, default=True,
                   help="sweep paced search-by-id rates for the capacity at p99 < 50 ms (default: on)")
    p.add_argument("--capacity-duration", type=float, default=20, help="seconds per capacity rate (default 20)")
    p.add_argument("--quick", action="store_true", help="smoke test: a tiny index, 4 clients, 1.5 s per scenario, "
                   "results to a temporary file unless --out is given")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    if args.quick:
        args.max_images, args.clients, args.duration, args.uploads = 24, 4, 1.5, 5
        args.paced_rate = args.paced_rate and 20
        args.upload_rate, args.capacity = args.upload_rate and 4, False
        args.out = args.out or Path(tempfile.gettempdir()) / "serve_load_quick.json"
    args.out = args.out or RESULTS
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tmp = None
    if args.index is not None:
        index_dir, built = args.index, {"source": "given"}
    else:
        work = args.work or Path(tmp := tempfile.mkdtemp(prefix="rshash-serve-load-"))
        built = build_index(work, args.data, args.model, args.max_images, args.bits)
        index_dir = work / "index"

    from rshash.index import Index

    with Index.open(index_dir, args.model) as index:
        stats = index.stats()
        model_dir = index.model_dir
        trained = model_is_trained(model_dir)
        id_list = _all_ids(index_dir)
        upload_paths = [index.get(i).path for i in random.Random(0).sample(id_list, min(args.uploads, len(id_list)))]
    uploads = [(Path(p).name, Path(p).read_bytes()) for p in upload_paths]
    params = {"k": args.k, "rerank": not args.no_rerank}

    def by_id(http: httpx.Client, rng: random.Random) -> httpx.Response:
        return http.get("/api/search", params={"id": rng.choice(id_list), **params})

    def by_upload(http: httpx.Client, rng: random.Random) -> httpx.Response:
        name, data = rng.choice(uploads)
        return http.post("/api/search", params=params, files={"image": (name, data)})

    plan = [("search_by_id", by_id, None), ("search_by_upload", by_upload, None)]
    if args.paced_rate:
        plan.append(("search_by_id_paced", by_id, args.paced_rate))
    if args.upload_rate:
        plan.append(("search_by_upload_paced", by_upload, args.upload_rate))
    about = machine()
    scenarios = {}
    try:
        server = Server(index_dir, args.model, args.workers)
        try:
            IDLE_CPU["rate"] = idle_cpu_rate(server.proc.pid, 2.0 if args.quick else 5.0)
            print(f"server CPU when idle: {IDLE_CPU['rate'] * 1000:.1f} ms/s", flush=True)
            for name, request, rate in plan:
                print(f"{name}: {args.clients} clients for up to {args.duration:g}s ...", flush=True)
                s = scenarios[name] = run_scenario(
                    server.url, server.proc.pid, args.clients, args.duration, args.max_requests, request, rate
                )
                print(f"  {s['ok']} ok, {s['errors']} errors, {s['throughput_rps']} req/s, "
                      f"p50 {s['latency_ms']['p50']} ms, p99 {s['latency_ms']['p99']} ms, "
                      f"server CPU {s['cpu_ms_per_request']['server']} ms/request", flush=True)
            capacity = sweep(server, args, by_id) if args.capacity else None
            alive = httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
        finally:
            server.stop()
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    def p99(name: str) -> float | None:
        return scenarios[name]["latency_ms"]["p99"] if name in scenarios else None

    def server_cpu(name: str) -> float | None:
        return scenarios[name]["cpu_ms_per_request"]["server_net"] if name in scenarios else None

    def met(value: float | None) -> bool | None:
        return None if value is None else value < GOALS["p99_search_by_id_ms"]

    targets = {
        # closed loop = saturation: latency there is mostly queueing (clients / throughput)
        "p99_search_by_id_closed_loop_ms": p99("search_by_id"),
        "p99_search_by_id_paced_ms": p99("search_by_id_paced"),
        "errors": sum(s["errors"] for s in scenarios.values()),
        "server_cpu_ms_per_search": server_cpu("search_by_id_paced"),
        "server_cpu_ms_per_upload": server_cpu("search_by_upload_paced"),
        "paced_capacity_rps_p99_50ms": None if capacity is None else capacity["capacity_rps"],
        "model_is_trained": trained,
    }
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "targets": targets,
        "machine": about | {"load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        "server": server_stack(args.workers),
        "index": {
            "images": stats["images"],
            "bits": stats["bits"],
            "kind": stats["kind"],
            "fingerprint": stats["fingerprint"],
            "model": describe_model(model_dir, trained),
            **built,
        },
        "settings": {"clients": args.clients, "duration_s": args.duration, "max_requests": args.max_requests,
                     **params, "distinct_uploads": len(uploads),
                     "upload_bytes_mean": round(statistics.fmean(len(d) for _, d in uploads)), "quick": args.quick},
        "scenarios": scenarios,
        "capacity": capacity,
        "server_idle_cpu_ms_per_s": _r(IDLE_CPU["rate"] * 1000),
        "cpu_note": "server_cpu_ms_per_search / _upload: the paced scenarios' server CPU (every server process) "
                    "minus its idle CPU over the same time, per request (cpu_ms_per_request.server_net; .server "
                    "is the raw figure); the load generator runs in this benchmark's process",
        "server_alive_after": alive,
        "goals": GOALS | {
            "met_errors": targets["errors"] == 0 and args.clients >= GOALS["clients"],
            "met_p99_search_by_id_closed_loop": met(targets["p99_search_by_id_closed_loop_ms"]),
            "met_p99_search_by_id_paced": met(targets["p99_search_by_id_paced_ms"]),
            "met_server_cpu_ms_per_search": _at_most(targets["server_cpu_ms_per_search"], GOALS["server_cpu_ms_per_search"]),
            "met_server_cpu_ms_per_upload": _at_most(targets["server_cpu_ms_per_upload"], GOALS["server_cpu_ms_per_upload"]),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"targets: {json.dumps(targets)}\nwrote {args.out}")
    return 0


def _at_most(value: float | None, goal: float) -> bool | None:
    return None if value is None else value <= goal


def sweep(server: "Server", args: argparse.Namespace, request) -> dict:
    """Paced search by id at rising total rates: the highest with p99 < 50 ms and no errors."""
    steps, capacity = [], None
    for rate in CAPACITY_RATES:
        s = run_scenario(server.url, server.proc.pid, args.clients, args.capacity_duration, 10**9, request, rate)
        ok = s["errors"] == 0 and s["latency_ms"]["p99"] is not None and s["latency_ms"]["p99"] < GOALS["p99_search_by_id_ms"]
        steps.append({"rate": rate, "throughput_rps": s["throughput_rps"], "p50_ms": s["latency_ms"]["p50"],
                      "p99_ms": s["latency_ms"]["p99"], "errors": s["errors"],
                      "server_cpu_ms": s["cpu_ms_per_request"]["server"], "ok": ok})
        print(f"  capacity sweep: {steps[-1]}", flush=True)
        if not ok:
            break
        capacity = rate
    return {"capacity_rps": capacity, "clients": args.clients, "seconds_per_rate": args.capacity_duration,
            "rule": "the highest paced rate (search by id) whose p99 is under 50 ms with 0 errors; the load generator "
                    "runs in this benchmark's process, the server in its own (both on this machine's cores)",
            "steps": steps}


def _all_ids(index_dir: Path) -> list[int]:
    import sqlite3

    with closing(sqlite3.connect(f"file:{index_dir / 'meta.sqlite'}?mode=ro", uri=True)) as db:
        return [r[0] for r in db.execute("SELECT id FROM images ORDER BY id")]


if __name__ == "__main__":
    sys.exit(main())
