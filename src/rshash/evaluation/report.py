"""A self-contained HTML report of one model's retrieval: open ``index.html`` offline in a browser.

Everything lives in one directory with relative links: ``index.html``,
``metrics.json``, the plots (PNG via matplotlib's Agg canvas, no pyplot state)
and ``thumbs/`` with the gallery's thumbnails. The directory is written
atomically, so a failed run leaves the previous report intact.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from PIL import Image

from ..codes import hamming_matrix, pack_codes
from ..data.images import UnreadableImage, load_rgb
from ..io_utils import atomic_directory
from ..ranking import DEFAULT_WEIGHT
from .metrics import average_precision, pr_curve_by_radius, relevance_matrix
from .protocols import METRIC_NOTES, RetrievalTask, ranked_positions

THUMB = 96
GALLERY_QUERIES = 8
TOP = 10
MAP_POINTS = 1000


@dataclass
class Analysis:
    """One Hamming ranking of a task and what the report draws from it."""

    dist: np.ndarray  # (Q, N) Hamming distances, query x database (task order)
    order: np.ndarray  # (Q, N') ranked database positions, self-matches removed
    rel: np.ndarray  # (Q, N') relevance along the ranking
    ap: np.ndarray  # (Q,) AP over the full ranking
    pr_curve: dict[str, list[float]]
    per_class_ap: dict[str, float]


def analyse(codes: np.ndarray, labels: np.ndarray, class_names: Sequence[str], task: RetrievalTask,
            descriptors: np.ndarray | None = None, weight: float = DEFAULT_WEIGHT) -> Analysis:
    """Rank the task's database for every query as the index does (re-ranked at ``weight`` when ``descriptors``
    are given)."""
    packed, bits = pack_codes(codes), codes.shape[1]
    q_labels, db_labels = labels[task.queries], labels[task.database]
    dist = hamming_matrix(packed[task.queries], packed[task.database]).astype(np.int64)
    exclude = task.exclude_self_mask()
    order = ranked_positions(codes, task, descriptors, rerank=descriptors is not None, weight=weight)
    rel = relevance_matrix(q_labels, db_labels, order)
    ap = average_precision(rel)
    relevant = relevance_matrix(q_labels, db_labels, np.broadcast_to(np.arange(len(db_labels)), dist.shape))
    if exclude is not None:  # a query is never within any radius of itself
        relevant &= ~exclude
        pr = pr_curve_by_radius(np.where(exclude, bits + 1, dist), relevant, bits)
    else:
        pr = pr_curve_by_radius(dist, relevant, bits)
    per_class = {class_names[c]: float(ap[q_labels == c].mean()) for c in np.unique(q_labels)} if q_labels.ndim == 1 else {}
    return Analysis(dist, order, rel, ap, pr, per_class)


@dataclass
class ReportInputs:
    title: str
    codes: np.ndarray  # (N, bits) bool, every item of the task
    labels: np.ndarray  # (N,) int class ids
    class_names: list[str]
    task: RetrievalTask
    metrics: dict[str, float]
    paths: Sequence[str] | None = None  # image files for the gallery (None: no gallery)
    details: dict[str, str] = field(default_factory=dict)  # extra header rows (model, data, ...)
    seed: int = 0
    descriptors: np.ndarray | None = None  # (N, dims) re-rank descriptors (None: Hamming ranking)


# ---------------------------------------------------------------------------- plots


def _save(fig: Figure, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path.name


def plot_pr_curve(pr: dict[str, list[float]], bits: int, path: Path) -> str:
    """Precision/recall of "everything within Hamming radius r" against r, and as a PR curve."""
    fig = Figure(figsize=(9, 3.6))
    ax1, ax2 = fig.subplots(1, 2)
    precision = [np.nan if p is None else p for p in pr["precision"]]  # None: no query retrieves anything there
    ax1.plot(pr["radius"], precision, "o-", ms=3, label="precision")
    ax1.plot(pr["radius"], pr["recall"], "s-", ms=3, label="recall")
    ax1.set(xlabel="Hamming radius r", ylabel="mean over queries", title=f"within radius r ({bits} bits)", ylim=(0, 1.02))
    ax1.legend()
    ax2.plot(pr["recall"], precision, "o-", ms=3)
    for r in (0, 1, 2, bits // 4, bits // 2):
        if pr["precision"][r] is not None:
            ax2.annotate(f"r={r}", (pr["recall"][r], precision[r]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax2.set(xlabel="recall", ylabel="precision", title="PR curve over Hamming radius", xlim=(0, 1.02), ylim=(0, 1.02))
    return _save(fig, path)


def plot_per_class_ap(per_class: dict[str, float], path: Path) -> str:
    """Horizontal bars of mean AP per query class, worst at the bottom, with the overall mean."""
    names = sorted(per_class, key=per_class.get)
    values = [per_class[n] for n in names]
    fig = Figure(figsize=(6, 0.28 * len(names) + 1.2))
    ax = fig.subplots()
    ax.barh(names, values, color="tab:blue")
    ax.axvline(float(np.mean(values)), color="k", ls="--", lw=1, label=f"mean of classes {np.mean(values):.3f}")
    ax.set(xlim=(0, 1), xlabel="mAP@all of the class's queries", title="AP per query class")
    ax.tick_params(axis="y", labelsize=8)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def code_map(codes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """2-D PCA of the 0/1 codes (= classical MDS of sqrt-Hamming distances), jittered so equal codes show."""
    x = codes.astype(np.float64)
    x -= x.mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    xy = x @ vt[:2].T if vt.shape[0] >= 2 else np.pad(x @ vt.T, ((0, 0), (0, 2 - vt.shape[0])))
    return xy + rng.uniform(-0.15, 0.15, xy.shape)


def plot_code_map(codes: np.ndarray, labels: np.ndarray, class_names: Sequence[str], path: Path, seed: int) -> str:
    """Scatter of a sample of codes in 2-D, one colour/marker per class."""
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(codes), size=min(MAP_POINTS, len(codes)), replace=False))
    xy = code_map(codes[pick], rng)
    fig = Figure(figsize=(8, 6))
    ax = fig.subplots()
    n_colours = 10 if len(class_names) <= 10 else 20
    cmap = colormaps[f"tab{n_colours}"]
    for c in np.unique(labels[pick]):
        m = labels[pick] == c
        ax.scatter(xy[m, 0], xy[m, 1], s=10, color=cmap(c % n_colours), marker="os^D"[(c // n_colours) % 4],
                   label=class_names[c])
    ax.set(title=f"codes in 2-D (PCA of bits, {len(pick)} items)", xticks=[], yticks=[])
    ax.legend(fontsize=7, markerscale=1.5, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    return _save(fig, path)


# ---------------------------------------------------------------------------- gallery


def gallery_queries(labels: np.ndarray, task: RetrievalTask, count: int, seed: int) -> list[int]:
    """Positions in ``task.queries``: one random query from each of up to ``count`` random classes."""
    rng = np.random.default_rng(seed)
    q_labels = labels[task.queries]
    classes = rng.permutation(np.unique(q_labels))[:count]
    return [int(rng.choice(np.flatnonzero(q_labels == c))) for c in classes]


def save_thumbnail(path: str, out: Path) -> bool:
    """A ``THUMB`` px JPEG of an image file; False (and no file) when it cannot be read."""
    try:
        img = Image.fromarray(load_rgb(path))
    except UnreadableImage:
        return False
    img.thumbnail((THUMB, THUMB))
    img.save(out, quality=85)
    return True


def _tile(item: int, paths: Sequence[str], thumbs: Path, caption: str, css: str) -> str:
    name = f"{item}.jpg"
    ok = (thumbs / name).is_file() or save_thumbnail(paths[item], thumbs / name)
    img = f'<img src="thumbs/{name}" alt="">' if ok else '<div class="missing">unreadable</div>'
    title = html.escape(Path(paths[item]).name)
    return f'<figure class="{css}" title="{title}">{img}<figcaption>{html.escape(caption)}</figcaption></figure>'


def gallery_html(inputs: ReportInputs, analysis: Analysis, out: Path) -> str:
    """Rows of query + top-10 thumbnails; green border = same class, red = other class."""
    if inputs.paths is None:
        return "<p>No image paths were given, so no gallery.</p>"
    thumbs = out / "thumbs"
    thumbs.mkdir(exist_ok=True)
    task, labels, names = inputs.task, inputs.labels, inputs.class_names
    rows = []
    for qpos in gallery_queries(labels, task, GALLERY_QUERIES, inputs.seed):
        query = int(task.queries[qpos])
        tiles = [_tile(query, inputs.paths, thumbs, f"query: {names[labels[query]]}", "query")]
        for rank, dbpos in enumerate(analysis.order[qpos, :TOP], start=1):
            item = int(task.database[dbpos])
            caption = f"#{rank} d={analysis.dist[qpos, dbpos]} {names[labels[item]]}"
            tiles.append(_tile(item, inputs.paths, thumbs, caption, "hit" if analysis.rel[qpos, rank - 1] else "miss"))
        rows.append(f'<div class="row">{"".join(tiles)}<span class="ap">AP {analysis.ap[qpos]:.3f}</span></div>')
    return "\n".join(rows)


# ---------------------------------------------------------------------------- page


CSS = """
body{font-family:sans-serif;margin:1.5em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:14px}
th{background:#f2f2f2}td.num{text-align:right;font-family:monospace}
.row{display:flex;flex-wrap:nowrap;align-items:flex-start;gap:4px;margin-bottom:8px;overflow-x:auto}
figure{margin:0;border:4px solid #999;width:96px;flex:none}figure img{display:block;width:96px;height:96px;object-fit:cover}
figure.query{border-color:#1f4e9c}figure.hit{border-color:#1a9c1a}figure.miss{border-color:#d11}
figcaption{font-size:10px;line-height:1.2;padding:2px;word-break:break-all}.ap{font-size:12px;align-self:center}
.missing{width:96px;height:96px;background:#eee;font-size:11px;display:flex;align-items:center;justify-content:center}
"""


def metric_note(key: str) -> str:
    """The normalisation note of a metric key such as ``map_at_20_min_norm``."""
    generic = re.sub(r"_\d+", "_k", key)
    note = METRIC_NOTES.get(generic, "")
    k = re.search(r"_(\d+)", key)
    return note.replace("top k", f"top {k.group(1)}").replace("min(k", f"min({k.group(1)}") if k else note


def _table(rows: list[tuple[str, str]], header: tuple[str, ...] | None = None) -> str:
    head = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table>{head}{body}</table>"


def page_html(inputs: ReportInputs, analysis: Analysis, images: dict[str, str], gallery: str) -> str:
    task, bits = inputs.task, inputs.codes.shape[1]
    about = [
        ("protocol", html.escape(f"{task.name}: {task.description}")),
        ("code length", f"{bits} bits"),
        ("queries / database", f"{len(task.queries)} / {len(task.database)}"
                               + (" (each query excluded from its own results)" if task.exclude_self else "")),
        ("ranking", "two-stage: Hamming shortlist re-ranked by the stored descriptors, ties by id"
                    if inputs.descriptors is not None else "Hamming distance, ties broken by database order"),
        ("relevance", "same class label"),
    ] + [(html.escape(k), html.escape(str(v))) for k, v in inputs.details.items()]
    metrics = [(html.escape(k), f'<span class="num">{v:.4f}</span>', html.escape(metric_note(k)))
               for k, v in inputs.metrics.items() if isinstance(v, (int, float))]
    fig = lambda key, alt: f'<p><img src="{images[key]}" alt="{alt}"></p>'  # noqa: E731
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(inputs.title)}</title><style>{CSS}</style></head>
<body>
<h1>{html.escape(inputs.title)}</h1>
{_table(about)}
<h2>Metrics</h2>
{_table(metrics, ("metric", "value", "normalisation"))}
<h2>Precision and recall over Hamming radius</h2>
{fig("pr", "PR curve over Hamming radius")}
<h2>AP per class</h2>
{fig("per_class", "AP per class")}
<h2>Map of the codes</h2>
{fig("map", "2-D map of the codes coloured by class")}
<h2>Example queries (top {TOP}; green = same class, red = other class)</h2>
{gallery}
</body></html>
"""


def _check_target(out_dir: Path) -> None:
    """Refuse to replace a non-empty directory that is not an earlier report (it is swapped out whole)."""
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / "index.html").is_file():
        raise ValueError(f"report directory exists and is not an rshash report: {out_dir} (choose a new --out)")


def write_report(out_dir: str | Path, inputs: ReportInputs, analysis: Analysis | None = None,
                 metrics_json: dict | None = None) -> Path:
    """Write the report directory atomically; return the path of ``index.html``."""
    out_dir = Path(out_dir)
    _check_target(out_dir)
    analysis = analysis or analyse(inputs.codes, inputs.labels, inputs.class_names, inputs.task, inputs.descriptors)
    with atomic_directory(out_dir) as tmp:
        images = {
            "pr": plot_pr_curve(analysis.pr_curve, inputs.codes.shape[1], tmp / "pr_curve.png"),
            "per_class": plot_per_class_ap(analysis.per_class_ap, tmp / "per_class_ap.png"),
            "map": plot_code_map(inputs.codes, inputs.labels, inputs.class_names, tmp / "code_map.png", inputs.seed),
        }
        gallery = gallery_html(inputs, analysis, tmp)
        if metrics_json is not None:
            (tmp / "metrics.json").write_text(json.dumps(metrics_json, indent=1))
        (tmp / "index.html").write_text(page_html(inputs, analysis, images, gallery))
    return out_dir / "index.html"
