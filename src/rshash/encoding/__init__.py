"""Adding items to an index: item source -> engine -> commit, one pipeline for every kind of item.

* :mod:`.items`: what an item is once loaded (:class:`~.items.Loaded`) or why it was not
  (:class:`~.report.Outcome`), and image files as an item source (:class:`~.items.ImageFiles`);
* :mod:`.chips`: the chips of georeferenced rasters as an item source (:class:`~.chips.RasterChips`);
* :mod:`.collapse`: identical GDAL / Python warnings of one raster collapsed into one line with a count;
* :mod:`.local`: the local engine (ONNX Runtime here, loading one batch ahead in a thread);
* :mod:`.ray_engine`: the same loaders in Ray Data tasks and encoder actors (imports Ray: only with
  ``engine="ray"``);
* :mod:`.commit`: the one commit of an encoded batch (codes, descriptors, rows and the source's own rows such
  as chips and R*Tree boxes) in one SQLite transaction, and :func:`~.commit.ingest`, the loop that drives a
  source through an engine into the store.

An item source plans picklable *work* (a file and its known checksum; a raster window) and hands a picklable
*loader* to the engine, which loads, encodes and yields batches; the writer (this process) commits each batch
with :func:`~.commit.commit_batch`, so crash safety, resume and the no-duplicate rule hold for every source
and every engine alike.
"""
