"""Encoding on Ray: files are read, checksummed, decoded and resized in Ray Data tasks, encoded by a pool of
actors that each hold one ONNX Runtime session (:class:`rshash.encoder.Encoder`), and the codes stream back to
the one index writer in this process, which commits them batch by batch with the local engine's commit
(:func:`rshash.index.ingest.commit_encoded`: one SQLite transaction per batch).

So an interrupted run keeps whole batches, a rerun skips files already indexed with the same checksum (the
workers skip decoding and encoding them; the writer checks again against SQLite before each commit), and
unreadable files are reported, never fatal. Workers read the image files and the model directory by path:
on a cluster both must be at the same paths on every node (a shared file system), and rshash installed there.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

import numpy as np
import ray
import ray.data

from ..data.datasets import ImageRecord
from ..data.images import UnreadableImage
from ..model_config import ModelDirError, read_config
from ..onnx_export import DEFAULT_THREADS
from ..progress import progress_bar
from ..index.ingest import AddReport, Pending, commit_encoded, load_item
from ..index.store import Store

OK, UNCHANGED, UNREADABLE = "ok", "unchanged", "unreadable"
#: Scheduling reservations: an encoder actor holds one CPU (running ``threads`` ONNX Runtime threads), a
#: read/decode task half of one (it mostly waits on the file system and the image codecs).
ACTOR_CPUS, DECODE_CPUS = 1.0, 0.5
#: Columns passed from the read tasks to the encoder actors and on to the writer (the pixels stop at the actors).
_META = ("path", "sha256", "status", "reason", "height", "width")


def connect(address: str | None = None) -> bool:
    """Join the Ray cluster at ``address`` (``auto``, ``ray://HOST:PORT``; ``None``: ``$RAY_ADDRESS`` or a new
    local Ray) unless this process already has one; True when this call started the connection."""
    if ray.is_initialized():
        return False
    if address in (None, "local"):
        ray.init(address=address, include_dashboard=False, configure_logging=False)
    else:
        ray.init(address=address, configure_logging=False)
    return True


def decode_batch(batch: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """Ray task: read, checksum, decode and resize a batch of files (:func:`load_item`, the local rule)."""
    n = len(batch["path"])
    out: dict[str, Any] = {
        "path": batch["path"],
        "sha256": np.empty(n, dtype=object),
        "status": np.empty(n, dtype=object),
        "reason": np.full(n, "", dtype=object),
        "height": np.zeros(n, dtype=np.int64),
        "width": np.zeros(n, dtype=np.int64),
        "pixels": np.full(n, b"", dtype=object),  # raw uint8 (size, size, 3) bytes of files to encode
    }
    for i, (path, known) in enumerate(zip(batch["path"], batch["known"])):
        try:
            item = load_item(str(path), str(known) or None, size)
        except UnreadableImage as exc:
            out["sha256"][i], out["status"][i], out["reason"][i] = "", UNREADABLE, str(exc)
            continue
        out["sha256"][i] = item.sha256
        if item.pixels is None:
            out["status"][i] = UNCHANGED
            continue
        out["status"][i], out["height"][i], out["width"][i] = OK, item.height, item.width
        out["pixels"][i] = item.pixels.tobytes()
    return out


class EncodeActor:
    """Ray actor: one ONNX Runtime session, refusing a model other than the index's (by fingerprint)."""

    def __init__(self, model_dir: str, fingerprint: str, threads: int):
        from ..encoder import Encoder  # onnxruntime in the actor only

        self.encoder = Encoder(model_dir, threads)
        if self.encoder.fingerprint != fingerprint:
            raise ModelDirError(
                f"model {model_dir} on this worker has fingerprint {self.encoder.fingerprint}, the index expects "
                f"{fingerprint}: every node must see the same model directory"
            )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n, size = len(batch["path"]), self.encoder.input_size
        codes = np.zeros((n, self.encoder.bits), dtype=bool)
        descriptors = np.zeros((n, self.encoder.descriptor_dims), dtype=np.float32)
        ok = np.flatnonzero(batch["status"] == OK)
        if ok.size:
            pixels = np.stack([np.frombuffer(batch["pixels"][i], dtype=np.uint8).reshape(size, size, 3) for i in ok])
            encoded = self.encoder.encode(pixels)
            codes[ok], descriptors[ok] = encoded.codes, encoded.descriptors
        return {**{k: batch[k] for k in _META}, "code": codes, "descriptor": descriptors}


def default_workers(threads: int = DEFAULT_THREADS) -> int:
    """One encoder actor per ``threads`` CPUs of the cluster, at least one."""
    cpus = float(ray.cluster_resources().get("CPU", 1))
    return max(1, int(cpus // max(1, threads)))


def _check_workers(workers: int) -> None:
    cpus = float(ray.cluster_resources().get("CPU", 1))
    if workers < 1 or workers * ACTOR_CPUS + DECODE_CPUS > cpus:
        raise ValueError(
            f"--workers {workers}: each encoder actor reserves {ACTOR_CPUS:g} CPU and reading needs "
            f"{DECODE_CPUS:g} more; the Ray cluster has {cpus:g} CPUs"
        )


def encoded_batches(
    records: list[ImageRecord], known: dict[str, str], model_dir: Path, fingerprint: str, size: int,
    batch_size: int, workers: int, threads: int,
) -> ray.data.Dataset:
    """The dataset of encoded rows (``_META`` columns + ``code`` bool and ``descriptor`` float32), streamed."""
    items = [{"path": r.path, "known": known.get(r.path, "")} for r in records]
    blocks = max(1, min(math.ceil(len(items) / batch_size), 4096))
    dataset = ray.data.from_items(items, override_num_blocks=blocks)
    decoded = dataset.map_batches(decode_batch, batch_size=batch_size, batch_format="numpy",
                                  fn_kwargs={"size": size}, num_cpus=DECODE_CPUS)
    return decoded.map_batches(
        EncodeActor, batch_size=batch_size, batch_format="numpy", num_cpus=ACTOR_CPUS,
        compute=ray.data.ActorPoolStrategy(size=workers),
        fn_constructor_kwargs={"model_dir": str(model_dir), "fingerprint": fingerprint, "threads": threads},
    )


def ingest_ray(
    store: Store, model_dir: str | Path, fingerprint: str, records: list[ImageRecord], lock: threading.RLock,
    batch_size: int = 32, progress: bool = True, address: str | None = None, workers: int | None = None,
    threads: int = DEFAULT_THREADS,
) -> AddReport:
    """Encode ``records`` on Ray and commit them here, batch by batch; return what was done."""
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    report = AddReport()
    if not records:
        return report
    config = read_config(model_dir)
    assert config.input_size is not None
    started = connect(address)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False  # ours counts committed images
        workers = workers if workers is not None else default_workers(threads)
        _check_workers(workers)
        known = {path: sha for path, (_, sha) in store.checksums([r.path for r in records]).items()}
        rows = encoded_batches(records, known, Path(model_dir).absolute(), fingerprint, config.input_size,
                               batch_size, workers, threads)
        by_path = {r.path: r for r in records}
        with progress_bar(total=len(records), desc="index (ray)", unit="img", disable=not progress) as bar:
            for batch in rows.iter_batches(batch_size=batch_size, batch_format="numpy"):
                _commit_batch(store, batch, by_path, lock, report)
                bar.update(len(batch["path"]))
    finally:
        if started:
            ray.shutdown()
    return report


def _commit_batch(
    store: Store, batch: dict[str, np.ndarray], by_path: dict[str, ImageRecord], lock: threading.RLock,
    report: AddReport,
) -> None:
    """Count unchanged and unreadable rows; commit the encoded ones in one transaction, checked against SQLite
    now (so rows committed since the workers' snapshot are neither duplicated nor re-added)."""
    encoded = []
    for i, (path, status, reason) in enumerate(zip(batch["path"], batch["status"], batch["reason"])):
        if status == UNREADABLE:
            report.add(str(path), str(reason))
        elif status == UNCHANGED:
            report.unchanged += 1
        else:
            encoded.append(i)
    with lock:
        current = store.checksums([str(batch["path"][i]) for i in encoded])
        pending, keep = [], []
        for i in encoded:
            path, sha = str(batch["path"][i]), str(batch["sha256"][i])
            old = current.get(path)
            if old is not None and old[1] == sha:
                report.unchanged += 1
                continue
            replaces = old[0] if old is not None else None
            pending.append(Pending(by_path[path], sha, int(batch["height"][i]), int(batch["width"][i]), None, replaces))
            keep.append(i)
        commit_encoded(store, pending, batch["code"][keep], batch["descriptor"][keep], report)
