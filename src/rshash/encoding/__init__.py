"""Encoding engines beyond the local one (which lives in :mod:`rshash.index.ingest`).

:mod:`.ray_engine` imports Ray; nothing imports it unless ``engine="ray"`` is asked for.
"""
