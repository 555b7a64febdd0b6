"""Queries from places: a lon/lat point, a box, indexed ids, images, or several of them as examples.

Each becomes a :class:`GeoQuery`: its :class:`~rshash.index.search.QueryVectors` (one, or several examples
searched together) and the footprints of the place(s) it was made from (the search drops hits on them):

* a **point**: the indexed chip that contains it (nearest centre), its stored code and descriptor;
* a **box**: one tile-sized window centred on it (read boundless, encoded now), or for a larger box the indexed
  chips whose centres it holds as several examples (see :meth:`PlaceQueries.box_query`);
* an indexed **id**, an **image** (file or pixels), or **several examples** at once (at most
  :data:`~rshash.index.search.MAX_EXAMPLES`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..index.query import Queries, is_id
from ..index.search import QueryVectors, as_examples, check_examples
from ..index.store import Store
from . import tables
from .catalog import Box, ChipCatalog, in_box, parse_box, parse_lonlat
from .footprints import box_polygon, overlap_area
from .places import PlaceNotIndexed
from .source import RasterError

#: A box up to this many tiles a side (tile = the raster's indexed chip window) is read as one tile-sized
#: window centred on it, at the index's scale.
BOX_TILES = 1.5
#: A larger box is a multi-example query of the indexed chips whose centres it holds, at most this many.
BOX_MAX_CHIPS = 16


class BoxTooLarge(ValueError):
    """A box search covering more than :data:`BOX_MAX_CHIPS` indexed chips (the service answers 422)."""


@dataclass(frozen=True)
class GeoQuery:
    """A query's example vectors (one, or several searched together), the footprints of the place(s) it was
    made from, and what it was (JSON). A single :class:`QueryVectors` given is kept as a one-example tuple."""

    examples: tuple[QueryVectors, ...]
    footprints: tuple[Any, ...] = ()
    described: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "examples", as_examples(self.examples))

    @property
    def vectors(self) -> QueryVectors:
        """The vectors of a one-example query (several examples have no single vector: use ``examples``)."""
        if len(self.examples) != 1:
            raise ValueError(f"a query of {len(self.examples)} examples has no single vector; use .examples")
        return self.examples[0]


class PlaceQueries(ChipCatalog):
    """Queries from places over one index's chips (``queries``: the index's own, for ids and pixels)."""

    def __init__(self, store: Store, queries: Queries):
        super().__init__(store)
        self.queries = queries

    def point_query(self, lon: float, lat: float, raster: int | str | Path | None = None) -> GeoQuery:
        """The indexed chip containing the point (nearest centre): its stored vectors and footprint."""
        lon, lat = parse_lonlat((lon, lat))
        raster_id = self.raster_id(raster)
        item = self._read(lambda conn: tables.chip_at(conn, lon, lat, raster_id))
        if item is None:
            raise PlaceNotIndexed(f"no indexed chip at lon {lon:.6f}, lat {lat:.6f}"
                                  + (f" in raster {raster}" if raster is not None else ""))
        query = self.id_query([item])
        return dataclasses.replace(query, described={"lonlat": [lon, lat], "chip": item} | (
            {"raster_id": raster_id} if raster_id is not None else {}))

    def id_query(self, ids: Sequence[int]) -> GeoQuery:
        """Indexed items (one, or several examples searched together): their stored vectors, themselves
        excluded."""
        ids = [int(i) for i in ids]
        check_examples(len(ids))
        vectors = tuple(self.queries.vectors(i) for i in ids)
        chips = self.chips(ids)
        return GeoQuery(vectors, tuple(chips[i]["footprint"] for i in ids if i in chips and chips[i]["footprint"]),
                        {"ids": ids} if len(ids) > 1 else {"id": ids[0]})

    def box_query(self, box: Sequence[float], raster: int | str | Path | None = None) -> GeoQuery:
        """A lon/lat box on its raster (the given one, else the indexed raster covering most of it), at the
        index's scale. The tile is the raster's indexed chip window (its most common size, source pixels):

        * a box up to :data:`BOX_TILES` tiles a side: one tile-sized window centred on the box, read
          boundless (padding as nodata) at the index's resolution and encoded now;
        * a larger box: the indexed chips of that raster whose centres it holds, as one multi-example
          query (:meth:`id_query`), at most :data:`BOX_MAX_CHIPS` of them;
        * beyond that: :class:`BoxTooLarge`.
        """
        box = parse_box(box)
        raster_id = self.raster_id(raster)
        if raster_id is None:
            raster_id = self._raster_for_box(box)
        tile = self._read(lambda conn: tables.chip_size(conn, raster_id))
        if tile is None:
            raise PlaceNotIndexed(f"raster {raster_id} has no indexed chips")
        chip = None
        try:
            with self.readers.source(raster_id, self.queries.input_size) as source:
                c0, r0, c1, r1 = source.box_pixels(*box)
                if c1 - c0 <= BOX_TILES * tile[0] and r1 - r0 <= BOX_TILES * tile[1]:
                    chip = source.read_box(*box, size=tile)
                else:  # the tiles of the box's part inside the raster: a bound before reading chip rows
                    width, height = source.ds.width, source.ds.height
                    tiles = (min(c1, width) - max(c0, 0)) / tile[0] * (min(r1, height) - max(r0, 0)) / tile[1]
        except RasterError as exc:
            raise PlaceNotIndexed(str(exc)) from exc
        if chip is None:
            return self._box_of_chips(box, raster_id, tile, tiles)
        vectors = self.queries.vectors(chip.pixels)
        return GeoQuery(vectors, (chip.meta.footprint,) if chip.meta.footprint else (),
                        {"box": list(box), "raster_id": raster_id, "window": list(chip.meta.window)})

    def _box_of_chips(self, box: Box, raster_id: int, tile: tuple[int, int], tiles: float) -> GeoQuery:
        """The multi-example query of the raster's indexed chips whose centres lie in the box."""
        limit = (f"a box search reads at most {BOX_TILES:g} tiles ({tile[0]} x {tile[1]} source pixels) a side "
                 f"as one chip, or uses at most {BOX_MAX_CHIPS} indexed chips as examples: draw a smaller box")
        if tiles > 4 * BOX_MAX_CHIPS:  # so many tiles hold more chip centres than the limit: no rows read
            raise BoxTooLarge(f"the box covers about {tiles:.0f} tiles of raster {raster_id}; {limit}")
        chips = self.chips(self.ids_in_box(box))
        ids = sorted(i for i, c in chips.items() if int(c["raster_id"]) == raster_id
                     and c["centroid"] is not None and in_box(*c["centroid"], box))
        if len(ids) > BOX_MAX_CHIPS:
            raise BoxTooLarge(f"the box covers {len(ids)} indexed chips of raster {raster_id}; {limit}")
        if not ids:
            raise PlaceNotIndexed(f"no indexed chip of raster {raster_id} has its centre in the box {list(box)}")
        query = self.id_query(ids)
        return dataclasses.replace(query, described=query.described | {"box": list(box), "raster_id": raster_id})

    def _raster_for_box(self, box: Box) -> int:
        best: tuple[float, int] | None = None
        query = box_polygon(box)
        for r in self.rasters():
            if r["footprint"] is None:
                continue
            area = overlap_area(r["footprint"], query)
            if area > 0 and (best is None or (-area, r["id"]) < best):
                best = (-area, r["id"])
        if best is None:
            raise PlaceNotIndexed(f"no indexed raster covers the box {list(box)}")
        return best[1]

    def examples_query(self, examples: Sequence[Any]) -> GeoQuery:
        """Several positive examples (indexed ids, image files, uint8 RGB pixels, or GeoQuery s) as one query
        (at most :data:`~rshash.index.search.MAX_EXAMPLES` vectors, counted before any is encoded)."""
        check_examples(len(examples))
        if examples and all(is_id(e) for e in examples):
            return self.id_query(list(examples))
        parts = [e if isinstance(e, GeoQuery) else self.id_query([e]) if is_id(e)
                 else GeoQuery(self.queries.vectors(e), (), {"image": str(e) if isinstance(e, (str, Path)) else "pixels"})
                 for e in examples]
        if not parts:
            raise ValueError("no examples given")
        if len(parts) == 1:
            return parts[0]
        vectors = tuple(v for p in parts for v in p.examples)
        return GeoQuery(vectors, tuple(f for p in parts for f in p.footprints), {"examples": [p.described for p in parts]})
