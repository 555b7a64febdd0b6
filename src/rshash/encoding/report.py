"""What adding items did: the :class:`Outcome` of an item that was not encoded, and the reports that count
them with the items added: :class:`AddReport` (files) and :class:`RasterAddReport` (raster chips)."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from ..data.datasets import SkipReport

log = logging.getLogger(__name__)

#: Outcomes of items that are not encoded (sources may add their own reasons, e.g. ``nodata``).
UNCHANGED, UNREADABLE = "unchanged", "unreadable"
#: The reason a raster is left partial when the run stopped at its chip budget.
LIMITED = "stopped at max_chips"


@dataclass(frozen=True)
class Outcome:
    """An item that was not loaded: unchanged, unreadable, or skipped for a reason of its source."""

    path: str
    status: str
    reason: str = ""


@dataclass
class AddReport(SkipReport):
    """What :meth:`Index.add_paths` did; ``skipped`` lists ``(path, reason)`` of unreadable files."""

    added: int = 0
    unchanged: int = 0  # already indexed with the same content checksum: nothing done
    updated: int = 0  # indexed path whose content changed: re-encoded under a new id
    limited: bool = False  # stopped at a budget of new items (--max-chips)

    def note(self, outcome: Outcome) -> None:
        """Count an item that was not encoded."""
        if outcome.status == UNCHANGED:
            self.unchanged += 1
        elif outcome.status == UNREADABLE:
            self.add(outcome.path, outcome.reason)
        else:
            raise ValueError(f"unexpected outcome {outcome.status!r} for {outcome.path}")

    def summary(self) -> str:
        return (
            f"{self.added} added, {self.updated} updated, {self.unchanged} unchanged, "
            f"{len(self.skipped)} unreadable skipped"
        )

    def to_dict(self) -> dict:
        return {
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
        }


@dataclass
class RasterAddReport(AddReport):
    """What :meth:`Index.add_rasters` did: chips ``added``, chips already indexed (``unchanged``), chips
    skipped by reason (``chips_skipped``: nodata, flat), rasters that could not be read (``skipped``), and
    one entry per raster (``rasters``: its status ``complete`` or ``partial`` with the reason, tiling, chips
    replaced because it was indexed before with other tiling options, collapsed warnings)."""

    chips_skipped: Counter = field(default_factory=Counter)
    rasters: list[dict] = field(default_factory=list)
    chip_reasons: dict[str, str] = field(default_factory=dict)  # status -> the last reason given (a read error)

    def add(self, path: str, reason: str) -> None:
        """A raster not indexed at all: unreadable, or refused (a ground resolution too far from the model's);
        the reason says which."""
        self.skipped.append((path, reason))
        log.warning("skipping raster: %s", reason)

    def note(self, outcome: Outcome) -> None:
        if outcome.status in (UNCHANGED, UNREADABLE):
            super().note(outcome)
        else:
            self.chips_skipped[outcome.status] += 1
            if outcome.reason:
                self.chip_reasons[outcome.status] = outcome.reason

    def summary(self) -> str:
        skipped = ", ".join(f"{n} {reason}" for reason, n in sorted(self.chips_skipped.items())) or "none"
        partial = sum(1 for r in self.rasters if r.get("status") == "partial" and r.get("reason") != LIMITED)
        return (f"{len(self.rasters)} raster(s): {self.added} chips added, {self.unchanged} already indexed, "
                f"chips skipped: {skipped}; {len(self.skipped)} raster(s) skipped (unreadable or refused)"
                + (f", {partial} partial (read errors; a rerun resumes them)" if partial else "")
                + (" (stopped at --max-chips)" if self.limited else ""))

    def to_dict(self) -> dict:
        return super().to_dict() | {"chips_skipped": dict(self.chips_skipped), "rasters": self.rasters,
                                    "limited": self.limited}
