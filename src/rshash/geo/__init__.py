"""Geo: georeferenced rasters, from coordinates to places (nothing is imported here; import the modules).

- :mod:`~rshash.geo.crs`: CRSs, lon/lat transformers, ground pixel size, lon/lat footprints of pixel windows.
- :mod:`~rshash.geo.tiling`: the tiling plan (rasterio Windows), tiling options, chip item paths, RasterError.
- :mod:`~rshash.geo.bands`: band choice (palette through its colour table), validity masks, the one stretch.
- :mod:`~rshash.geo.source`: RasterSource: bands, masks, the one stretch, chips with footprints; raster paths.
- :mod:`~rshash.geo.digest`: raster checksums (a ``.vrt`` with its sources), cached per file change.
- :mod:`~rshash.geo.reader`: indexed rasters opened again as indexed (bands, stretch), cached, a lock each.
- :mod:`~rshash.geo.footprints`: footprint overlap and suppression, GeoJSON and CSV export.
- :mod:`~rshash.geo.tables`: SQLite tables for rasters, chips and the chips' R*Tree (SQL only).
- :mod:`~rshash.geo.search`: point / box / ids / examples queries and place results over an index.
- :mod:`~rshash.geo.overlays`: indexed rasters warped to Web Mercator as PNG overlays for the map.
"""
