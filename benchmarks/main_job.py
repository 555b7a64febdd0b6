"""Cold time of the README's main job (`rshash run`): UCMD train -> index -> searches -> report, then the raster
part (self-supervised model on the shared acquisitions -> raster index -> geo searches -> GeoJSON).

"Cold" means a fresh output folder and an empty feature cache (``RSHASH_CACHE`` in a temporary folder); the
``.venv`` is already installed (``bash scripts/setup.sh`` is not timed). The phases are timed from the log lines
the job writes (their timestamps), so the split needs no instrumentation in the job itself.

    python benchmarks/main_job.py [--data DIR] [--rasters DIR]

Writes ``benchmarks/results/main_job.json`` (``cold_seconds``: the whole job; goal <= 600 s on 2 cores).
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
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from results_doc import publish  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "main_job.json"
#: log messages that end a phase (first match wins), in the order the job runs them
PHASES = (("ucmd_train", "trained:"), ("ucmd_index", "index:"), ("ucmd_report", "report written"),
          ("raster_train", "self-supervised model:"), ("raster_index_and_search", "map of the raster index"))


def _phase_seconds(lines: list[tuple[float, str]], started: float) -> dict[str, float | None]:
    """Seconds between consecutive phase ends (wall clock at which the line was read from the job)."""
    out, previous = {}, started
    for name, marker in PHASES:
        at = next((t for t, line in lines if marker in line), None)
        out[name] = None if at is None else round(at - previous, 1)
        previous = at if at is not None else previous
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="UCMD folder (default: the job's own default)")
    parser.add_argument("--rasters", help="demo rasters folder (default: the job's own default)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    extra = (["--data", args.data] if args.data else []) + (["--rasters", args.rasters] if args.rasters else [])
    with tempfile.TemporaryDirectory(prefix="main-job-") as tmp:
        env = dict(os.environ, RSHASH_CACHE=str(Path(tmp) / "cache"), RSHASH_PROGRESS="0", PYTHONUNBUFFERED="1")
        command = [sys.executable, "-m", "rshash.cli", "run", "--out", str(Path(tmp) / "out"), *extra]
        started = time.perf_counter()
        lines: list[tuple[float, str]] = []
        with subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) as job:
            for line in job.stdout:
                lines.append((time.perf_counter(), line.rstrip()))
        cold = round(time.perf_counter() - started, 1)
        if job.returncode != 0:
            print("\n".join(line for _, line in lines[-40:]), file=sys.stderr)
            raise SystemExit(f"the main job failed (exit {job.returncode})")
        raster_part = any("map of the raster index" in line for _, line in lines)
    out = {
        "benchmark": "main_job",
        "command": "python benchmarks/main_job.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "job": "rshash run --out <fresh folder> " + " ".join(extra),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": platform.python_version()},
        "cold": "fresh output folder, empty RSHASH_CACHE; .venv installed beforehand (setup not timed)",
        "cold_seconds": cold, "goal_seconds": 600, "met": cold <= 600, "raster_part": raster_part,
        "phase_seconds": _phase_seconds(lines, started),
    }
    publish(args.out, out, "main_job", markdown(out))
    print(json.dumps(out, indent=1))
    return 0


def markdown(out: dict) -> str:
    phases = ", ".join(f"{k} {v} s" for k, v in out["phase_seconds"].items())
    return "\n".join([
        "## Main job, cold", "",
        f"`{out['command']}` ({out['date']}; {out['machine']['cpu_count']} CPUs): `{out['job']}` — {out['cold']}.", "",
        f"Cold: **{out['cold_seconds']} s** (goal ≤ {out['goal_seconds']} s: {'met' if out['met'] else 'not met'}); "
        f"raster part {'included' if out['raster_part'] else 'absent (rasters not found)'}. Phases: {phases}."])


if __name__ == "__main__":
    sys.exit(main())
