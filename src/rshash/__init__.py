"""rshash: content-based remote-sensing image retrieval with deep hashing."""

__version__ = "0.1.0"
