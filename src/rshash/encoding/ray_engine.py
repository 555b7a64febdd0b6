"""Encoding on Ray: a source's loader runs in Ray Data tasks (files read, checksummed, decoded and resized;
raster windows read), a pool of actors that each hold one ONNX Runtime session
(:class:`rshash.encoder.Encoder`) encodes, and the codes stream back to the one index writer in this process,
which commits them batch by batch like the local engine (:func:`rshash.encoding.commit.ingest`).

So an interrupted run keeps whole batches, a rerun skips items already indexed (the loaders skip decoding
and encoding them; the writer checks again against SQLite before each commit), and unreadable items are
reported, never fatal. Workers read the files and the model directory by path: on a cluster both must be
at the same paths on every node (a shared file system), and rshash installed there.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import ray
import ray.data

from ..model_config import ModelDirError, read_config
from ..onnx_export import DEFAULT_THREADS
from .commit import Encoded
from .items import Loaded, Loader

#: Scheduling reservations: an encoder actor holds one CPU (running ``threads`` ONNX Runtime threads), a
#: load task half of one (it mostly waits on the file system and the image codecs).
ACTOR_CPUS, DECODE_CPUS = 1.0, 0.5


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


def load_batch(batch: dict[str, np.ndarray], loader: Loader) -> dict[str, np.ndarray]:
    """Ray task: run the source's loader on a batch of (pickled) work; pixels travel as raw bytes."""
    results = loader([pickle.loads(w) for w in batch["work"]])
    n = len(results)
    out: dict[str, Any] = {"ok": np.zeros(n, dtype=bool), "result": np.empty(n, dtype=object),
                           "pixels": np.full(n, b"", dtype=object)}
    for i, r in enumerate(results):
        if isinstance(r, Loaded):
            out["ok"][i], out["pixels"][i] = True, r.pixels.tobytes()
            r.pixels = None
        out["result"][i] = pickle.dumps(r)
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
        n, size = len(batch["ok"]), self.encoder.input_size
        codes = np.zeros((n, self.encoder.bits), dtype=bool)
        descriptors = np.zeros((n, self.encoder.descriptor_dims), dtype=np.float32)
        ok = np.flatnonzero(batch["ok"])
        if ok.size:
            pixels = np.stack([np.frombuffer(batch["pixels"][i], dtype=np.uint8).reshape(size, size, 3) for i in ok])
            encoded = self.encoder.encode(pixels)
            codes[ok], descriptors[ok] = encoded.codes, encoded.descriptors
        return {"ok": batch["ok"], "result": batch["result"], "code": codes, "descriptor": descriptors}


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


class RayEngine:
    """Loads and encodes on Ray (``address``: ``auto``, ``ray://HOST:PORT`` or None for ``$RAY_ADDRESS`` / a
    local Ray; ``workers``: encoder actors, default one per ``threads`` CPUs)."""

    def __init__(self, model_dir: str | Path, fingerprint: str, address: str | None = None,
                 workers: int | None = None, threads: int = DEFAULT_THREADS):
        self.model_dir = Path(model_dir).absolute()
        self.fingerprint = fingerprint
        self.address, self.workers, self.threads = address, workers, threads
        config = read_config(model_dir)
        assert config.input_size is not None
        self.bits, self.dims = config.bits, config.descriptor_dims
        self._started, self._depth = False, 0

    def __enter__(self) -> "RayEngine":
        """Connect (a local Ray started here is shut down on the outermost exit): several sources in one
        ``with engine:`` block share one Ray."""
        if self._depth == 0:
            self._started = connect(self.address)
        self._depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0 and self._started:
            ray.shutdown()
            self._started = False

    def encode(self, work: Sequence[Any], loader: Loader, batch_size: int) -> Iterator[Encoded]:
        with self:  # nested inside an outer `with engine:` it connects once
            ray.data.DataContext.get_current().enable_progress_bars = False  # ours counts committed items
            workers = self.workers if self.workers is not None else default_workers(self.threads)
            _check_workers(workers)
            rows = [{"work": pickle.dumps(w)} for w in work]
            blocks = max(1, min(math.ceil(len(rows) / batch_size), 4096))
            loaded = ray.data.from_items(rows, override_num_blocks=blocks).map_batches(
                load_batch, batch_size=batch_size, batch_format="numpy", fn_kwargs={"loader": loader},
                num_cpus=DECODE_CPUS)
            encoded = loaded.map_batches(
                EncodeActor, batch_size=batch_size, batch_format="numpy", num_cpus=ACTOR_CPUS,
                compute=ray.data.ActorPoolStrategy(size=workers),
                fn_constructor_kwargs={"model_dir": str(self.model_dir), "fingerprint": self.fingerprint,
                                       "threads": self.threads})
            for batch in encoded.iter_batches(batch_size=batch_size, batch_format="numpy"):
                results = [pickle.loads(r) for r in batch["result"]]
                ok = np.flatnonzero(batch["ok"])
                yield Encoded([results[i] for i in ok], np.asarray(batch["code"][ok], dtype=bool),
                              np.asarray(batch["descriptor"][ok], dtype=np.float32),
                              [r for r in results if not isinstance(r, Loaded)])
