"""The web app and HTTP API over an index: ``rshash serve`` (see :mod:`rshash.service.app`)."""

from .app import create_app

__all__ = ["create_app"]
