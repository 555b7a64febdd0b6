"""The raster and place half of the :class:`~.archive.Index` facade: :class:`RasterMethods`.

Rasters tiled into chips and added (files, folders, a local STAC catalogue), removed whole; searches by place
(a lon/lat point, a box, examples) through :mod:`rshash.geo.search`; the index out as GeoParquet. A mixin of
:class:`~.archive.Index`, whose store, live structures, searcher, lock and engines it uses.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from .model_check import model_resolutions, recorded_gsds
from .query import Query
from .store import FORMAT_VERSION

if TYPE_CHECKING:
    from ..encoding.report import RasterAddReport
    from ..geo.search import GeoHit, GeoSearch


class RasterMethods:
    """Rasters, places and GeoParquet for :class:`~.archive.Index` (which provides ``_store``, ``_live``,
    ``_lock``, ``_searcher``, ``queries``, ``_engine``, ``_input_size`` and the model's identity)."""

    def add_rasters(
        self,
        paths: Iterable[str | Path] | str | Path,
        *,
        tile: int = 256,
        gsd: str | float = "auto",
        overlap: float = 0.5,
        bands: Sequence[int] | None = None,
        max_nodata: float = 0.5,
        batch_size: int = 32,
        progress: bool = True,
        max_chips: int | None = None,
        engine: str = "local",
        address: str | None = None,
        workers: int | None = None,
        datetime: str | None = None,
        overrides: dict | None = None,
    ) -> "RasterAddReport":
        """Tile georeferenced rasters (files or folders) into chips and add them: each chip is an item with its
        footprint, window and raster recorded (see :mod:`rshash.encoding.chips`); ``gsd="auto"`` tiles at the
        ground resolution the model was trained at nearest the raster's own (index meta ``model_gsds``, see
        :attr:`model_gsds`) and skips a raster more than 2x from it (``report.skipped``, with the reason: give
        ``gsd`` in metres or ``"native"`` to index it); each report entry's ``gsd_reason`` says why. Batches are committed on their
        own, so an interrupted run resumes without duplicates. ``max_chips``: stop after that many new chips.
        No raster stops the run: one that cannot be read is skipped with its reason (``report.skipped``), one
        with read errors part-way keeps its chips and is marked ``partial`` (resumed by the next run); a raster
        indexed before with other tiling options has its chips replaced (the report entry's ``replaced``).
        ``engine``, ``address``, ``workers``: see :meth:`add`. ``datetime``: each raster's acquisition time
        (``auto``/None: from its file name, ``YYYYMMDD`` or a bare year; ``tiff``: its TIFF date-time tag;
        ``none``; or one time or ``START/END`` interval for all of them), see :mod:`rshash.geo.dates`."""
        from ..encoding.chips import add_rasters
        from ..geo.tiling import TilingOptions

        options = TilingOptions(tile, gsd, overlap, None if bands is None else tuple(bands), max_nodata)
        report = add_rasters(self._store, self._engine(engine, address, workers), paths, self._lock, options,
                             self._input_size(), batch_size=batch_size, progress=progress, max_chips=max_chips,
                             gsd_default=model_resolutions(self.model_dir), datetime=datetime,
                             overrides=overrides)
        if "geo" in self.__dict__:  # rasters replaced or removed: reopen what is read next
            self.geo.readers.close()
        self._live.update_now()
        return report

    def add_stac(self, catalogue: str | Path, **options: Any) -> "RasterAddReport":
        """Index the rasters a local STAC ItemCollection, Catalog, Collection or Item describes (see
        :mod:`rshash.geo.stac`): each Item's RGB (or visual) GeoTIFF asset, read with the bands its ``eo:bands``
        / ``bands`` name red, green, blue (unless ``bands`` is given), dated by the Item's date-time. Items
        without a usable local asset are skipped with the reason (``report.skipped``). ``options``: those of
        :meth:`add_rasters`."""
        from ..encoding.chips import RasterOverride
        from ..encoding.report import RasterAddReport
        from ..geo.stac import read_stac

        rasters = read_stac(catalogue)
        usable = [r for r in rasters if r.path is not None]
        overrides = {r.path.absolute(): RasterOverride(r.bands, r.acquired, {
            "stac_item": r.item_id, "stac_asset": r.asset, "stac_gsd": r.gsd}) for r in usable}
        report = self.add_rasters([r.path for r in usable], overrides=overrides, **options) if usable \
            else RasterAddReport()
        for r in rasters:
            if r.path is None:
                report.add(f"{catalogue}#{r.item_id}", f"STAC item {r.item_id}: {r.reason}")
        return report

    def remove_raster(self, raster: int | str | Path) -> int:
        """Remove an indexed raster, given by id, path or file name, with all its chips (one transaction);
        return the number of chips removed. ValueError if the index has no such raster."""
        from ..encoding.chips import remove_rasters
        from ..geo import tables

        geo = self.geo
        raster_id = geo.raster_id(raster)  # PlaceNotIndexed (a ValueError) for an unknown path or name
        if raster_id is None or self._store.run(lambda conn: tables.get_raster(conn, raster_id)) is None:
            raise ValueError(f"no raster {raster!r} in the index {self.path}")
        with self._lock:
            removed = remove_rasters(self._store, [raster_id])
        geo.readers.forget(raster_id)
        self._live.update_now()
        return removed

    # ------------------------------------------------------------------ places (raster chips)

    @cached_property
    def geo(self) -> "GeoSearch":
        """Geo queries and searches over this index's raster chips (see :mod:`rshash.geo.search`)."""
        from ..geo.search import GeoSearch

        return GeoSearch(self._store, self.queries, self._searcher)

    def search_point(self, lon: float, lat: float, k: int | None = 20, *, raster: Any = None,
                     **options: Any) -> list["GeoHit"]:
        """Places like the indexed chip containing ``(lon, lat)`` (its own footprint excluded); options of
        :meth:`GeoSearch.search <rshash.geo.search.GeoSearch.search>`: ``aoi``, ``radius``, ``max_overlap``, ``rerank``."""
        return self.geo.search(self.geo.point_query(lon, lat, raster), k, **options)

    def search_box(self, box: Sequence[float], k: int | None = 20, *, raster: Any = None,
                   **options: Any) -> list["GeoHit"]:
        """Places like a lon/lat box ``(lon_min, lat_min, lon_max, lat_max)``, read from its raster and encoded."""
        return self.geo.search(self.geo.box_query(box, raster), k, **options)

    def search_places(self, examples: Query | Sequence[Query], k: int | None = 20, **options: Any) -> list["GeoHit"]:
        """Places like an indexed id, an image (file or pixels), or several of them combined, as geo results."""
        examples = list(examples) if isinstance(examples, (list, tuple)) else [examples]
        return self.geo.search(self.geo.examples_query(examples), k, **options)

    def rasters(self) -> list[dict]:
        """The indexed rasters: id, path, size, CRS, ground resolution, stretch, chip count, lon/lat bounds."""
        return self.geo.rasters()

    @property
    def model_gsds(self) -> list[float] | None:
        """The ground resolutions (metres) the index's model was trained at, as the index records them (None
        for an index made before they were recorded that has no raster yet)."""
        return recorded_gsds(self._store.meta())

    def export_geoparquet(self, path: str | Path, *, progress: bool = True) -> dict:
        """Write every item (footprint, date, raster window, label, code, descriptor) to a GeoParquet 1.1 file,
        from one snapshot of the index; see :mod:`.geoparquet`. Returns rows, chips, bytes and path."""
        from .geoparquet import write_geoparquet

        model = {"fingerprint": self.fingerprint, "bits": self.bits, "descriptor_dims": self.descriptor_dims,
                 "model_gsds": self.model_gsds, "rerank_weight": self.rerank_weight, "kind": self._kind,
                 "index_format_version": FORMAT_VERSION}
        return self._store.run(lambda conn: write_geoparquet(conn, path, model, progress=progress))
