"""Reference methods the hashing model is compared with, on the same features and splits.

* unsupervised binary codes of real-valued features: :class:`LSH`, :class:`ITQ`;
* no hashing at all: cosine k-NN ranking (:func:`knn_report`);
* supervised deep hashing: loss modules (DPSH, HashNet, CSQ, MiLAN) plugged into
  :func:`rshash.training.hashing.train_hash_head`, so they share our head,
  batches, epochs and validation-based epoch choice; only the objective differs.
"""

from .csq import CSQLoss, hash_centres
from .deep import DEEP_METHODS, head_codes, make_objective, train_deep
from .dpsh import DPSHLoss
from .hashnet import HashNetLoss
from .itq import ITQ
from .knn import cosine_distances, knn_report
from .linear import LinearHasher
from .lsh import LSH
from .milan import MiLANLoss

__all__ = [
    "CSQLoss", "DEEP_METHODS", "DPSHLoss", "HashNetLoss", "ITQ", "LSH", "LinearHasher", "MiLANLoss",
    "cosine_distances", "hash_centres", "head_codes", "knn_report", "make_objective", "train_deep",
]
