"""Two-stage search at archive scale on realistic codes (issue 18 item 2).

    python benchmarks/scale_realistic.py [--model runs/ucmd/model] [--n 10000000] [--work DIR]

1. **Real codes.** Every UCMD image, ``--views`` (48) views each (the image itself, then crops, colour jitter,
   rotations and flips: ``rshash.data.augment.chip_views``) through the model's ONNX encoder: ~10^5 real codes,
   descriptors and sigmoid outputs (cached in ``--work``).
2. **The generator** (``rshash.index.synthetic.RealisticCodes``) is fitted on views 0-7 of every image (seeds) and
   the pairs (view 0, view v) of one image (same place, other framing and colour: per-bit flip rates, descriptor
   noise). **Accepted** only if, at 10^5 items, the generated set's neighbourhoods match the real set's:
   quantiles 10/50/90 of the 1000th-neighbour Hamming distance within ``DIST_BOUND`` bits and the median tie count
   (items at exactly that distance) within a factor ``TIE_BOUND`` (``QUERIES`` queries of each set, itself left out).
3. **At --n (10^7)**: generated codes and int8 descriptors written to ``.npy`` files, an IVF code index (rshash's
   ``ivf`` kind) built and saved. Queries: 200 real views that are not seeds (views 8+ of random images).
   Reference = the exhaustive two-stage result: every item within the 1000th-smallest Hamming distance (ties at the
   shortlist boundary included), scored by the model's re-rank (``ranking.rerank_scores`` at the model's weight);
   its 20th score. A search result counts if its score is <= that.
4. **Searching process** (a fresh subprocess): opens the saved IVF and the vector table memory-mapped
   (``VectorTable.open``) and runs the product's search path (``index.search.candidates`` + ``rank``, one thread)
   for each nprobe: recall@20, p50/p99 ms per query, the process's anonymous RSS (``RssAnon``: its own memory;
   the memory-mapped descriptors are file pages, counted in ``RssFile``).

Writes benchmarks/results/scale_realistic.json; ``benchmarks/scale.py --parts realistic`` copies its targets.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "scale_realistic.json"
SCALING_MD = ROOT / "docs" / "SCALING.md"
os.environ.setdefault("RSHASH_PROGRESS", "1")

#: Acceptance bounds of the generator at 10^5 (see the module docstring).
DIST_BOUND = 2
TIE_BOUND = 2.0
QUERIES = 300
NEIGHBOUR = 1000
SEED_VIEWS = 8
NPROBES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
#: Extra candidates tied at the shortlist's last distance (SearchParams.ties): 0 = the default search.
TIES = (0, 1_000, 19_000)
#: Noise scales tried by the calibration (1 = the same-place pairs' spread).
NOISE_SCALES = (1.0, 0.75, 0.5, 0.35, 0.25)


def _shown(path: Path) -> str:
    path = Path(path).absolute()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def memory_kb() -> dict[str, int]:
    """This process's resident memory by kind (``/proc/self/status``), in kB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0])
    return out


# ---------------------------------------------------------------------------- 1. real codes


def real_codes(model: Path, data: Path | None, views: int, work: Path) -> dict[str, np.ndarray]:
    """Sigmoid outputs, descriptors (float) and (image, view) of every UCMD image's ``views`` views (cached)."""
    from concurrent.futures import ThreadPoolExecutor

    from rshash.data.augment import chip_views
    from rshash.data.datasets import load_records, resolve_data_dir
    from rshash.data.images import load_rgb, resize_rgb
    from rshash.encoder import Encoder
    from rshash.encoding.local import prefetch
    from rshash.progress import progress_bar

    encoder = Encoder(model)
    cache = work / f"real-{encoder.fingerprint}-{views}.npz"
    if cache.is_file():
        return dict(np.load(cache))
    records = load_records(resolve_data_dir(data))
    size = encoder.input_size
    single = encoder.with_threads(1)

    def load(i: int) -> np.ndarray:
        chip = resize_rgb(load_rgb(records[i].path), size)
        return chip_views(chip, views, np.random.default_rng(i))

    outputs, descriptors = [], []
    with ThreadPoolExecutor(encoder.threads) as pool, progress_bar(total=len(records) * views, desc="real views",
                                                                       unit="view") as bar:
        pending = []
        for pixels in prefetch((load(i) for i in range(len(records))), depth=encoder.threads):
            pending.append(pool.submit(single.encode, pixels))
            if len(pending) >= encoder.threads:
                e = pending.pop(0).result()
                outputs.append(e.outputs), descriptors.append(e.descriptors), bar.update(len(e.outputs))
        for f in pending:
            e = f.result()
            outputs.append(e.outputs), descriptors.append(e.descriptors), bar.update(len(e.outputs))
    image = np.repeat(np.arange(len(records)), views)
    out = {"outputs": np.concatenate(outputs).astype(np.float32), "descriptors": np.concatenate(descriptors),
           "image": image, "view": np.tile(np.arange(views), len(records))}
    work.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **out)
    return out


def logits(outputs: np.ndarray) -> np.ndarray:
    p = np.clip(outputs.astype(np.float64), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p)).astype(np.float32)


# ---------------------------------------------------------------------------- 2. the generator and its check


def fit_generator(real: dict, seed: int = 0, noise_scale: float = 1.0):
    from rshash.index.synthetic import RealisticCodes

    seeds = np.flatnonzero(real["view"] < SEED_VIEWS)
    row = {(i, v): r for r, (i, v) in enumerate(zip(real["image"][seeds], real["view"][seeds]))}
    pairs = np.array([(row[(i, 0)], row[(i, v)]) for (i, v) in row if v > 0])
    return RealisticCodes(logits(real["outputs"][seeds]), real["descriptors"][seeds], pairs, seed=seed,
                          noise_scale=noise_scale)


def hamming_all(codes: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Hamming distances from one packed code to every row (uint64 words when the width allows)."""
    if codes.shape[1] % 8 == 0:
        words = codes.view(np.uint64)
        return np.bitwise_count(words ^ query.view(np.uint64)[None, :]).sum(axis=1, dtype=np.int32)
    return np.bitwise_count(codes ^ query[None, :]).sum(axis=1, dtype=np.int32)


def neighbourhoods(codes: np.ndarray, n_queries: int, seed: int, neighbour: int = NEIGHBOUR) -> dict:
    """The ``neighbour``-th neighbour distance and its tie count for ``n_queries`` rows (themselves left out)."""
    rng = np.random.default_rng(seed)
    kth, ties = [], []
    for q in rng.choice(len(codes), n_queries, replace=False):
        d = hamming_all(codes, codes[q])
        d[q] = 10**6
        k = int(np.partition(d, neighbour - 1)[neighbour - 1])
        kth.append(k), ties.append(int((d == k).sum()))
    return {"kth_distance_quantiles_10_50_90": [float(x) for x in np.percentile(kth, [10, 50, 90])],
            "kth_distance_mean": float(np.mean(kth)), "tie_count_median": float(np.median(ties)),
            "tie_count_quantiles_10_90": [float(x) for x in np.percentile(ties, [10, 90])]}


def _gaps(a: dict, b: dict) -> tuple[float, float]:
    dist_gap = max(abs(x - y) for x, y in zip(a["kth_distance_quantiles_10_50_90"], b["kth_distance_quantiles_10_50_90"]))
    return dist_gap, max(a["tie_count_median"], 1) / max(b["tie_count_median"], 1)


def calibrate_noise(real: dict, seed: int = 0) -> dict:
    """The noise scale whose generated set matches a fifth of the real set best at the fifth neighbour count
    (``NEIGHBOUR / 5``): fitted at 1/5 of the size the check then runs at, so the check is not the fit."""
    codes = np.packbits(real["outputs"] >= 0.5, axis=1)
    part = np.random.default_rng(seed).choice(len(codes), len(codes) // 5, replace=False)
    target = neighbourhoods(codes[part], QUERIES, 3, NEIGHBOUR // 5)
    tried = {}
    for scale in NOISE_SCALES:
        generated, _, _ = fit_generator(real, seed + 1, scale).sample(len(part))
        got = neighbourhoods(generated, QUERIES, 4, NEIGHBOUR // 5)
        dist_gap, tie_ratio = _gaps(target, got)
        tried[str(scale)] = {"kth_distance_gap_bits": dist_gap, "tie_count_ratio": tie_ratio,
                             "kth_distance_quantiles_10_50_90": got["kth_distance_quantiles_10_50_90"]}
    best = min(NOISE_SCALES, key=lambda s: (tried[str(s)]["kth_distance_gap_bits"], abs(np.log(tried[str(s)]["tie_count_ratio"]))))
    return {"noise_scale": best, "items": len(part), "neighbour": NEIGHBOUR // 5,
            "real": target["kth_distance_quantiles_10_50_90"], "tried": tried}


def check_generator(real: dict, seed: int = 0, noise_scale: float = 1.0) -> dict:
    gen = fit_generator(real, seed, noise_scale)
    real_codes_ = np.packbits(real["outputs"] >= 0.5, axis=1)
    generated, _, _ = gen.sample(len(real_codes_))
    a, b = neighbourhoods(real_codes_, QUERIES, 1), neighbourhoods(generated, QUERIES, 2)
    dist_gap, tie_ratio = _gaps(a, b)
    accepted = dist_gap <= DIST_BOUND and 1 / TIE_BOUND <= tie_ratio <= TIE_BOUND
    return {"items": len(real_codes_), "noise_scale": noise_scale, "real": a, "generated": b, "kth_distance_gap_bits": dist_gap,
            "tie_count_ratio_real_over_generated": tie_ratio,
            "bounds": {"kth_distance_quantile_gap_bits": DIST_BOUND, "tie_count_factor": TIE_BOUND},
            "accepted": bool(accepted),
            "flip_rate": {"mean": float(gen.flip_rate.mean()), "min": float(gen.flip_rate.min()),
                          "max": float(gen.flip_rate.max())},
            "descriptor_noise_mean": float(gen.descriptor_noise.mean()), "seeds": len(gen.logits)}


# ---------------------------------------------------------------------------- 3. the archive and the reference


def build_archive(real: dict, n: int, work: Path, seed: int = 0, noise_scale: float = 1.0) -> dict:
    """Generated codes and descriptors of ``n`` items as a saved vector table and IVF index under ``work``."""
    from rshash.index.backends.faiss import CodeIndex
    from rshash.index.vectors import VectorTable
    from rshash.progress import progress_bar
    from rshash.ranking import descriptor_norms

    tag = f"{n}-s{noise_scale:g}"
    table_dir, ivf_path = work / f"table-{tag}", work / f"ivf-{tag}.faiss"
    info_path = work / f"archive-{tag}.json"
    if info_path.is_file() and table_dir.is_dir() and ivf_path.is_file():
        return json.loads(info_path.read_text())
    gen = fit_generator(real, seed, noise_scale)
    bits, dims = gen.bits, gen.dims
    tmp = work / f"table-{tag}.building"
    tmp.mkdir(parents=True, exist_ok=True)
    codes = np.lib.format.open_memmap(tmp / "codes.npy", "w+", np.uint8, (n, bits // 8))
    descriptors = np.lib.format.open_memmap(tmp / "descriptors.npy", "w+", np.int8, (n, dims))
    norms = np.lib.format.open_memmap(tmp / "norms.npy", "w+", np.float32, (n,))
    start = time.perf_counter()
    chunk = 1_000_000
    with progress_bar(total=n, desc="generate", unit="item") as bar:
        for s in range(0, n, chunk):
            c, d, _ = gen.sample(min(chunk, n - s))
            codes[s : s + len(c)], descriptors[s : s + len(c)], norms[s : s + len(c)] = c, d, descriptor_norms(d)
            bar.update(len(c))
    generate_s = time.perf_counter() - start
    np.save(tmp / "ids.npy", np.arange(n, dtype=np.int64))
    codes.flush(), descriptors.flush(), norms.flush()
    del codes, descriptors, norms
    table = VectorTable.open(tmp)
    table.save(table_dir)  # the product's atomic save (copies the files once)
    del table
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()
    table = VectorTable.open(table_dir)
    start = time.perf_counter()
    ivf = CodeIndex.build("ivf", bits, np.asarray(table.ids), np.asarray(table.codes))
    build_s = time.perf_counter() - start
    ivf.save(ivf_path)
    info = {"n": n, "noise_scale": noise_scale, "tag": tag, "bits": bits, "dims": dims, "generate_s": generate_s, "ivf_build_s": build_s,
            "nlist": int(ivf.index.nlist), "table_bytes": sum(f.stat().st_size for f in table_dir.iterdir()),
            "ivf_bytes": ivf_path.stat().st_size}
    info_path.write_text(json.dumps(info))
    return info


def make_queries(real: dict, n_queries: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Packed codes and int8 descriptors of real views that are not seeds of the generator."""
    from rshash.ranking import quantize_descriptors

    rows = np.flatnonzero(real["view"] >= SEED_VIEWS)
    rows = np.sort(np.random.default_rng(seed).choice(rows, n_queries, replace=False))
    return np.packbits(real["outputs"][rows] >= 0.5, axis=1), quantize_descriptors(real["descriptors"][rows])


def reference(work: Path, tag: str, codes_q: np.ndarray, desc_q: np.ndarray, weight: float, k: int, shortlist: int):
    """The exhaustive two-stage ``k``-th score per query (ties at the shortlist boundary included)."""
    from rshash.index.vectors import VectorTable
    from rshash.ranking import cosine_similarity, rerank_scores

    table = VectorTable.open(work / f"table-{tag}")
    codes = np.asarray(table.codes)
    kth_scores, sizes = [], []
    for q in range(len(codes_q)):
        d = hamming_all(codes, codes_q[q])
        bound = int(np.partition(d, shortlist - 1)[shortlist - 1])
        rows = np.flatnonzero(d <= bound)
        sim = cosine_similarity(desc_q[q][None], table.descriptors[rows], table.norms[rows])[0]
        score = rerank_scores(d[rows], sim, codes.shape[1] * 8, weight)
        kth_scores.append(float(np.partition(score, k - 1)[k - 1]))
        sizes.append(len(rows))
    return np.array(kth_scores), sizes


# ---------------------------------------------------------------------------- 4. the searching process


def search_worker(work: Path) -> None:
    """In a fresh process: open the saved structures (table memory-mapped) and search at each nprobe."""
    from rshash.index.backends.faiss import CodeIndex
    from rshash.index.search import SearchParams, candidates, rank
    from rshash.index.vectors import VectorTable

    job = json.loads((work / "job.json").read_text())
    q = np.load(work / "queries.npz")
    ref = q["reference"]
    before = memory_kb()
    start = time.perf_counter()
    ivf = CodeIndex.load("ivf", work / f"ivf-{job['tag']}.faiss")
    table = VectorTable.open(work / f"table-{job['tag']}")
    load_s = time.perf_counter() - start
    loaded = memory_kb()
    bits = ivf.bits
    curve = []
    for ties in job["ties"]:
        params = SearchParams(k=job["k"], shortlist=job["shortlist"], weight=job["weight"], ties=ties)
        default_nprobe = ivf.probes(params.window)
        for nprobe in sorted(set(job["nprobes"]) | {default_nprobe}):
            ivf.nprobe = nprobe
            ms, hits, sizes = [], [], []
            for i in range(len(q["codes"])):
                t = time.perf_counter()
                ids, dist = candidates(q["codes"][i], params, ivf, table, None)
                ranked = rank(ids, dist, q["descriptors"][i], params, table, bits)
                ms.append((time.perf_counter() - t) * 1000)
                hits.append(float(np.mean(ranked.scores[: job["k"]] <= ref[i] + 1e-6)))
                sizes.append(len(ids))
            curve.append({"ties": ties, "nprobe": nprobe, "recall_at_20": float(np.mean(hits)),
                          "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
                          "reranked_median": float(np.median(sizes)), "default_nprobe": nprobe == default_nprobe})
            print(f"ties {ties} nprobe {nprobe}: {curve[-1]}", flush=True)
    after = memory_kb()
    (work / "search.json").write_text(json.dumps({
        "load_s": load_s, "curve": curve, "memory_kb": {"start": before, "loaded": loaded, "end": after},
        "anon_rss_gb": after["RssAnon"] / 2**20, "file_rss_gb": after["RssFile"] / 2**20}))


# ---------------------------------------------------------------------------- main


def measure(model: Path, data: Path | None, n: int, views: int, work: Path, n_queries: int = 200) -> dict:
    from rshash.model_config import model_rerank_weight, read_config
    from rshash.ranking import DEFAULT_SHORTLIST

    started = time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    real = real_codes(model, data, views, work)
    calibration = calibrate_noise(real)
    print(f"noise calibration: {json.dumps(calibration, indent=1)}", flush=True)
    scale = calibration["noise_scale"]
    check = check_generator(real, noise_scale=scale)
    print(f"generator at {check['items']}: {json.dumps(check, indent=1)}", flush=True)
    archive = build_archive(real, n, work, noise_scale=scale)
    print(f"archive: {archive}", flush=True)
    weight = model_rerank_weight(read_config(model))
    k = 20
    codes_q, desc_q = make_queries(real, n_queries)
    start = time.perf_counter()
    ref, sizes = reference(work, archive["tag"], codes_q, desc_q, weight, k, DEFAULT_SHORTLIST)
    reference_s = time.perf_counter() - start
    np.savez(work / "queries.npz", codes=codes_q, descriptors=desc_q, reference=ref)
    (work / "job.json").write_text(json.dumps({"k": k, "shortlist": DEFAULT_SHORTLIST, "weight": weight,
                                               "nprobes": list(NPROBES), "ties": list(TIES), "tag": archive["tag"]}))
    subprocess.run([sys.executable, __file__, "--worker", str(work)], check=True)
    search = json.loads((work / "search.json").read_text())
    curve = search["curve"]
    default = [c for c in curve if c["ties"] == 0]  # the product's default search (no extra ties)
    good = [c for c in default if c["recall_at_20"] >= 0.99]
    best = min(good, key=lambda c: c["p50_ms"]) if good else max(default, key=lambda c: (c["recall_at_20"], -c["p50_ms"]))
    with_ties = [c for c in curve if c["ties"]]
    good_ties = [c for c in with_ties if c["recall_at_20"] >= 0.99]
    best_ties = (min(good_ties, key=lambda c: c["p50_ms"]) if good_ties
                 else max(with_ties, key=lambda c: (c["recall_at_20"], -c["p50_ms"])) if with_ties else None)
    return {
        "what": "two-stage search (IVF Hamming shortlist of 1000, re-rank at the model's weight, top 20) on "
                "generated codes and descriptors shaped like the model's real ones",
        "model": _shown(model), "real_views": {"images": int(real["image"].max()) + 1, "views_per_image": views,
                                                "items": len(real["image"])},
        "noise_calibration": calibration, "generator_check": check, "archive": archive, "queries": n_queries, "k": k, "shortlist": DEFAULT_SHORTLIST,
        "rerank_weight": weight, "reference_s": reference_s,
        "reference_candidates_median": float(np.median(sizes)),
        "reference_note": "exhaustive two-stage: every item within the 1000th-smallest Hamming distance (ties at "
                          "the boundary included), re-ranked; a result counts if its score <= the reference 20th",
        "search": search, "chosen": best, "chosen_with_ties": best_ties,
        "targets": {"two_stage_1e7_recall_at_20": best["recall_at_20"] if n == 10**7 else None,
                    "two_stage_1e7_p50_ms": best["p50_ms"] if n == 10**7 else None,
                    "two_stage_1e7_nprobe": best["nprobe"] if n == 10**7 else None,
                    "search_anon_rss_gb_1e7": search["anon_rss_gb"] if n == 10**7 else None,
                    "two_stage_1e7_recall_at_20_with_ties": best_ties["recall_at_20"] if n == 10**7 and best_ties else None,
                    "two_stage_1e7_p50_ms_with_ties": best_ties["p50_ms"] if n == 10**7 and best_ties else None,
                    "generator_accepted": check["accepted"]},
        "seconds": time.perf_counter() - started,
    }


def _q(neighbourhood: dict) -> str:
    return "[" + ", ".join(f"{x:.3g}" for x in neighbourhood["kth_distance_quantiles_10_50_90"]) + "]"


def markdown(r: dict) -> str:
    """The section of docs/SCALING.md this script writes (every figure from its results)."""
    cal, check, arch = r["noise_calibration"], r["generator_check"], r["archive"]
    real, gen = check["real"], check["generated"]
    search = r["search"]
    t = r["targets"]
    lines = [
        "## Two-stage search at 10^7 on realistic codes (issue 18 item 2)", "",
        f"`{r['command'].strip()}` → `benchmarks/results/scale_realistic.json` (copied into `scale.json`'s targets; this "
        "section is written by the script).",
        f"Real codes: every UCMD image in {r['real_views']['views_per_image']} views (itself, crops, colour jitter, "
        f"rotations, flips) through the main job's {arch['bits']}-bit model (`{r['model']}`, ONNX encoder): "
        f"{r['real_views']['items']:,} real items. Generator (`rshash.index.synthetic.RealisticCodes`): seeds = "
        f"views 0–{SEED_VIEWS - 1} of every image; per-bit flip rates ({check['flip_rate']['min']:.3f}–"
        f"{check['flip_rate']['max']:.3f}) and descriptor noise from the pairs (view 0, view v); noise scale "
        f"{cal['noise_scale']:g} chosen at 1/5 of the size ({cal['items']:,} items, {cal['neighbour']}th neighbour), "
        f"then **checked at {check['items']:,} items** ({NEIGHBOUR}th neighbour, {QUERIES} queries): 10/50/90 % "
        f"quantiles of its distance real {_q(real)} vs generated {_q(gen)} bits (bound ±{check['bounds']['kth_distance_quantile_gap_bits']}), "
        f"median tie count real {real['tie_count_median']:g} vs generated {gen['tie_count_median']:g} (bound "
        f"×{check['bounds']['tie_count_factor']:g}): **accepted = {check['accepted']}**.", "",
        f"At {arch['n']:,} generated items (IVF {arch['nlist']} lists, build {arch['ivf_build_s']:.0f} s; "
        f"{r['queries']} real query views that are not seeds; re-rank weight {r['rerank_weight']:g}; reference = "
        f"exhaustive two-stage with every item within the {r['shortlist']}th distance, median "
        f"{r['reference_candidates_median']:,.0f} items): the searching process (a fresh one, vector table "
        f"memory-mapped with `VectorTable.open`) holds **{search['anon_rss_gb']:.2f} GB anonymous RSS** (goal ≤ 2; "
        f"the table's pages it touched are {search['file_rss_gb']:.2f} GB of file pages). `ties`: extra candidates "
        "tied at the shortlist's last distance re-ranked too (`SearchParams.ties`; 0 is the default search).", "",
        "| ties | nprobe | recall@20 | p50 ms | p99 ms | re-ranked (median) |", "|---|---|---|---|---|---|",
    ]
    for c in search["curve"]:
        lines.append(f"| {c['ties']} | {c['nprobe']}{' (default)' if c['default_nprobe'] else ''} | "
                     f"{c['recall_at_20']:.3f} | {c['p50_ms']:.1f} | {c['p99_ms']:.0f} | {c['reranked_median']:.0f} |")
    met = t["two_stage_1e7_recall_at_20"] is not None and t["two_stage_1e7_recall_at_20"] >= 0.99 \
        and t["two_stage_1e7_p50_ms"] < 5
    lines += ["", f"Target (recall@20 ≥ 0.99 at p50 < 5 ms, default search): best "
              f"{t['two_stage_1e7_recall_at_20']:.3f} at {t['two_stage_1e7_p50_ms']:.1f} ms (nprobe "
              f"{t['two_stage_1e7_nprobe']}): **{'met' if met else 'not met'}**"
              + (f"; with ties {r['chosen_with_ties']['ties']}: {r['chosen_with_ties']['recall_at_20']:.3f} at "
                 f"{r['chosen_with_ties']['p50_ms']:.1f} ms." if r.get("chosen_with_ties") else ".")]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=ROOT / "runs/ucmd/model")
    p.add_argument("--data", type=Path, default=None, help="UCMD (default: $RSHASH_DATA, else ../shared/data/...)")
    p.add_argument("--n", type=int, default=10**7, help="generated items searched")
    p.add_argument("--views", type=int, default=48, help="real views per UCMD image")
    p.add_argument("--work", type=Path, default=Path(os.environ.get("RSHASH_CACHE", Path.home() / ".cache/rshash"))
                   / "scale_realistic", help="generated files and cached real codes (several GB at 10^7)")
    p.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--render-only", action="store_true", help="rewrite the docs/SCALING.md section from the JSON")
    args = p.parse_args(argv)
    if args.worker:
        search_worker(args.worker)
        return 0
    from results_doc import write_section

    if args.render_only:
        write_section("scale_realistic", markdown(json.loads(args.out.read_text())), SCALING_MD)
        return 0
    results = measure(args.model, args.data, args.n, args.views, args.work)
    results["command"] = "python benchmarks/scale_realistic.py " + " ".join(sys.argv[1:] if argv is None else argv)
    results["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    from rshash.io_utils import atomic_write_text

    atomic_write_text(args.out, json.dumps(results, indent=1))
    write_section("scale_realistic", markdown(results), SCALING_MD)
    print(json.dumps(results["targets"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
