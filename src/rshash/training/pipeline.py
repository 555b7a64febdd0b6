"""The three training phases end to end: split -> features -> fine-tune -> levels -> hash head -> model dir."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..backbone import StageBackbone, create_backbone
from ..data.datasets import ImageRecord, SkipReport, class_names
from ..data.splits import apply_split, load_split, save_split, stratified_split
from ..features import FeatureBank, build_feature_bank, default_cache_dir
from ..io_utils import atomic_write_bytes
from ..evaluation.protocols import evaluate, protocol_a
from ..hashing.head import HashHead, WhiteningHashHead
from ..model import DescriptorHead, HashingModel, ModelConfig
from ..model_dir import save_model_dir
from .finetune import FinetuneConfig, finetune_tail, predict
from .hashing import HashTrainConfig, head_descriptors, head_outputs, train_hash_head
from .levels import finetuned_levels

log = logging.getLogger(__name__)


@dataclass
class TrainOptions:
    backbone: str = "efficientnet-lite0"
    test_fraction: float = 0.2
    val_fraction: float = 0.1  # of the training part, for epoch and hyper-parameter choice
    seed: int = 0
    views: int = 8
    descriptor_dims: int = 128
    finetune: bool = True
    split_file: str | None = None
    cache_dir: str | None = None
    finetune_config: FinetuneConfig = field(default_factory=FinetuneConfig)
    hash_config: HashTrainConfig = field(default_factory=HashTrainConfig)
    #: Training sources recorded in the model (``ModelConfig.sources``: kind, path, ground resolution, bands);
    #: empty: the model records none (read as UCMD at 0.3 m).
    sources: list[dict] = field(default_factory=list)


def assign_splits(records: Sequence[ImageRecord], options: TrainOptions) -> dict[str, str]:
    """train / val / test per image: from --split, the manifest, or a seeded stratified split."""
    if options.split_file:
        return load_split(options.split_file)
    if all(r.split for r in records):
        assignment = {r.path: r.split for r in records}
        if "val" not in assignment.values():
            train = [r for r in records if r.split == "train"]
            carved = stratified_split(train, {"train": 1 - options.val_fraction, "val": options.val_fraction}, options.seed + 1)
            assignment.update(carved)
        return assignment
    outer = stratified_split(records, {"train": 1 - options.test_fraction, "test": options.test_fraction}, options.seed)
    train = [r for r in records if outer[r.path] == "train"]
    inner = stratified_split(train, {"train": 1 - options.val_fraction, "val": options.val_fraction}, options.seed + 1)
    return outer | inner


@dataclass
class Prepared:
    """A labelled dataset ready for the phases: the feature bank and index arrays into it."""

    bank: FeatureBank
    labels: np.ndarray
    class_names: list[str]
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    @property
    def database(self) -> np.ndarray:
        """Protocol A database: every training image (train + val)."""
        return np.sort(np.concatenate([self.train, self.val]))


def prepare(records: Sequence[ImageRecord], assignment: dict[str, str], bank: FeatureBank) -> Prepared:
    """Index arrays for the bank's (readable) records."""
    records = apply_split(bank.records, assignment)
    names = class_names(records)
    if len(names) < 2:
        raise ValueError(f"training needs at least 2 labelled classes, found {names}")
    labels = np.array([names.index(r.label) for r in records])
    pick = lambda s: np.array([i for i, r in enumerate(records) if r.split == s], dtype=np.int64)  # noqa: E731
    return Prepared(bank, labels, names, pick("train"), pick("val"), pick("test"))


def teacher_features(bank: FeatureBank, pooled: np.ndarray | None = None) -> np.ndarray:
    """Last-stage average-pooled features for every image and view ``(N, V, C)``.

    From the bank's pretrained vectors, or from ``pooled`` level vectors laid out like
    them (the fine-tuned levels: the descriptor's source).
    """
    start = sum(bank.tap_dims[:-1])
    pooled = bank.pooled if pooled is None else pooled
    return pooled[:, :, start : start + bank.tap_dims[-1] // 2]


@dataclass
class Setup:
    """Phases 1 and 2 done: the dataset, fine-tuned backbone and level vectors ``(N, V, D)``."""

    data: Prepared
    backbone: StageBackbone
    levels: np.ndarray
    finetune_metrics: dict
    timings: dict

    def teacher(self, kind: str) -> np.ndarray:
        """``(N, V, C)`` features whose similarities the hashing terms keep ("pretrained" or "finetuned")."""
        if kind not in ("pretrained", "finetuned"):
            raise ValueError(f"teacher must be 'pretrained' or 'finetuned', got {kind!r}")
        return teacher_features(self.data.bank, self.levels if kind == "finetuned" else None)

    def fit_descriptor(self, head: DescriptorHead) -> DescriptorHead:
        """Fit a descriptor's PCA on the training images' (train + val, every view) fine-tuned features."""
        feats = self.teacher("finetuned")[self.data.database]
        return head.fit(feats.reshape(-1, feats.shape[-1]))

    @torch.no_grad()
    def descriptors(self, head: DescriptorHead, view: int = 0) -> np.ndarray:
        """``(N, dims)`` descriptors of every image (one view) from the cached features: what the encoder computes."""
        return head(torch.from_numpy(np.ascontiguousarray(self.teacher("finetuned")[:, view]))).numpy()

    def train_head(self, config: HashTrainConfig, progress: bool = False) -> tuple[HashHead, dict]:
        """Phase 3 on this setup's train split (epoch chosen on its val split)."""
        d = self.data
        return train_hash_head(self.levels, d.bank.tap_dims, self.teacher(config.teacher), d.labels, d.train, d.val,
                               len(d.class_names), config, progress)

    def head_descriptors(self, head: WhiteningHashHead, view: int = 0) -> np.ndarray:
        """``(N, dims)`` descriptors of every image (one view) that a whitening head makes itself."""
        return head_descriptors(head, self.levels[:, view], self.data.bank.tap_dims)

    def trained(self, config: HashTrainConfig, descriptor_dims: int = 128) -> tuple[HashHead | WhiteningHashHead,
                                                                                  np.ndarray, np.ndarray]:
        """Phase 3 and the descriptor: ``(head, codes, descriptors)`` of every image (view 0), the descriptors
        being what the encoder would output (a whitening head's own, else the fitted PCA descriptor)."""
        head, _ = self.train_head(config)
        if isinstance(head, WhiteningHashHead):
            return head, self.codes(head), self.head_descriptors(head)
        desc = self.descriptors(self.fit_descriptor(DescriptorHead(self.data.bank.tap_dims[-1] // 2, descriptor_dims)))
        return head, self.codes(head), desc

    def model(self, head: HashHead | WhiteningHashHead, config: HashTrainConfig, backbone: str = "efficientnet-lite0",
              descriptor_dims: int = 128, sources: Sequence[dict] = ()) -> HashingModel:
        """The model to save: this setup's fine-tuned backbone, the trained ``head`` and its descriptor (a whitening
        head's own, else the PCA descriptor of ``descriptor_dims`` fitted here)."""
        whiten = isinstance(head, WhiteningHashHead)
        model_config = ModelConfig(bits=config.bits, backbone=backbone, cell=config.cell, width=config.width,
                                   dropout=0.0 if whiten else config.dropout,
                                   descriptor_dims=head.projection.shape[1] if whiten else descriptor_dims,
                                   class_names=self.data.class_names, sources=[dict(s) for s in sources])
        model = HashingModel(model_config, backbone=self.backbone)
        model.head.load_state_dict(head.state_dict())
        if model.descriptor is not None:
            self.fit_descriptor(model.descriptor)
        return model

    def codes(self, head: HashHead, view: int = 0) -> np.ndarray:
        """``(N, bits)`` bool codes of every image (one view) from the cached level vectors."""
        return head_outputs(head, self.levels[:, view], self.data.bank.tap_dims) >= 0.5


def _finetune_key(bank_key: str, data: Prepared, options: TrainOptions) -> str:
    h = hashlib.sha256(bank_key.encode())
    h.update(json.dumps([asdict(options.finetune_config), data.train.tolist(), data.val.tolist(), data.labels.tolist()]).encode())
    return h.hexdigest()[:20]


def finetune_cached(backbone: StageBackbone, data: Prepared, options: TrainOptions) -> dict:
    """Phase 1, or its cached result: the same bank, split and config give the same tail weights."""
    bank = data.bank
    path = Path(options.cache_dir or default_cache_dir()) / f"finetune-{_finetune_key(bank.key, data, options)}.pt"
    if path.is_file():
        saved = torch.load(path, map_location="cpu", weights_only=False)
        backbone.load_state_dict(saved["backbone"])
        log.info("fine-tuned backbone from cache: %s", path)
        return saved["metrics"] | {"from_cache": True}
    classifier, metrics = finetune_tail(
        backbone, bank.cut, data.labels, data.train, data.val, len(data.class_names), options.finetune_config
    )
    if len(data.test) and set(data.labels[data.test]) <= set(data.labels[data.train]):  # not for unseen classes
        metrics["test_accuracy"] = float((predict(classifier, bank.cut[data.test, 0]) == data.labels[data.test]).mean())
    buf = io.BytesIO()
    torch.save({"backbone": backbone.state_dict(), "metrics": metrics}, buf)
    atomic_write_bytes(path, buf.getvalue())
    return metrics


def setup(records: Sequence[ImageRecord], options: TrainOptions, report: SkipReport | None = None,
          assignment: dict[str, str] | None = None) -> Setup:
    """Phases 1 and 2 (each cached on disk): feature bank, split, fine-tuning, level vectors."""
    t0 = time.perf_counter()
    backbone = create_backbone(options.backbone)
    bank = build_feature_bank(records, backbone, options.views, options.cache_dir, report=report)
    data = prepare(records, assignment or assign_splits(records, options), bank)
    timings = {"features_s": time.perf_counter() - t0}
    if not options.finetune:
        return Setup(data, backbone, bank.pooled, {}, timings)
    t = time.perf_counter()
    ft = finetune_cached(backbone, data, options)
    timings["finetune_s"] = time.perf_counter() - t
    t = time.perf_counter()
    levels = finetuned_levels(backbone, bank, options.cache_dir)
    timings["levels_s"] = time.perf_counter() - t
    return Setup(data, backbone, levels, ft, timings)


def train(records: Sequence[ImageRecord], out_dir: str | Path, options: TrainOptions = TrainOptions()) -> dict:
    """Run all three phases and write the model directory atomically; return the metrics."""
    t0 = time.perf_counter()
    torch.manual_seed(options.seed)
    report = SkipReport()
    assignment = assign_splits(records, options)
    s = setup(records, options, report, assignment)
    data, bank = s.data, s.data.bank
    metrics: dict = {"classes": data.class_names, "skipped": report.skipped, "sizes": {
        "train": len(data.train), "val": len(data.val), "test": len(data.test)}}
    if s.finetune_metrics:
        metrics["finetune"] = s.finetune_metrics
    t = time.perf_counter()
    hc = options.hash_config
    head, metrics["hashing"] = s.train_head(hc, progress=True)
    timings = s.timings | {"hashing_s": time.perf_counter() - t}

    model = s.model(head, hc, options.backbone, options.descriptor_dims, options.sources)
    if len(data.test):
        codes = s.codes(head)
        task = protocol_a(data)
        desc = s.descriptors(model.descriptor) if model.descriptor is not None else s.head_descriptors(head)
        metrics["test_retrieval"] = {
            "hamming": evaluate(codes, data.labels, task, rerank=False),
            "reranked": evaluate(codes, data.labels, task, desc),
            "protocol": task.description + "; view 0 from cached features; two-stage ranking as the index (ties by id)",
        }
    timings["total_s"] = time.perf_counter() - t0
    metrics["timings"] = timings
    metrics["options"] = json.loads(json.dumps(asdict(options), default=str))

    split_tmp = Path(out_dir).parent / f".{Path(out_dir).name}.split.json"
    Path(out_dir).parent.mkdir(parents=True, exist_ok=True)
    save_split(split_tmp, {r.path: r.split for r in apply_split(bank.records, assignment)}, options.seed,
               {"train": 1 - options.test_fraction, "test": options.test_fraction})
    try:
        metrics["fingerprint"] = save_model_dir(out_dir, model, metrics, split_tmp)
    finally:
        split_tmp.unlink(missing_ok=True)
    return metrics
