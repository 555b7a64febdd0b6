"""Geo: georeferenced rasters, from coordinates to places (nothing is imported here; import the modules).

- :mod:`~rshash.geo.crs`: CRSs, lon/lat transformers, ground pixel size, lon/lat footprints of pixel windows.
- :mod:`~rshash.geo.tiling`: the tiling plan (rasterio Windows), tiling options, chip item paths, RasterError.
- :mod:`~rshash.geo.bands`: band choice (palette through its colour table), validity masks, the one stretch.
- :mod:`~rshash.geo.source`: RasterSource: bands, masks, the one stretch, chips with footprints; raster paths.
- :mod:`~rshash.geo.digest`: raster checksums (a ``.vrt`` with its sources), cached per file change.
- :mod:`~rshash.geo.reader`: indexed rasters opened again as indexed (bands, stretch), cached, a lock each.
- :mod:`~rshash.geo.footprints`: footprint overlap and suppression, GeoJSON and CSV export.
- :mod:`~rshash.geo.tables`: SQLite tables for rasters, chips and the chips' R*Tree (SQL only).
- :mod:`~rshash.geo.catalog`: an index's raster and chip tables as read (by id, by box, extent), window pixels;
  lon/lat point and box parsing.
- :mod:`~rshash.geo.queries`: queries from places: a point, a box, ids, images, several examples.
- :mod:`~rshash.geo.search`: place searches over an index: filters (area, dates), own place and
  near-duplicates dropped, find-all; results as places.
- :mod:`~rshash.geo.dates`: acquisition instants and intervals (from the user, file names, TIFF tags), ranges.
- :mod:`~rshash.geo.place`: the acquisitions of a place as grid chips grouped by footprint.
- :mod:`~rshash.geo.places`: the same place in every acquisition, and the areas find-all keeps.
- :mod:`~rshash.geo.stac`: STAC catalogues in, indexed rasters and hits out.
- :mod:`~rshash.geo.overlays`: indexed rasters warped to Web Mercator as PNG overlays for the map.
"""
