"""The web app and HTTP API over an index: ``rshash serve`` (see :mod:`rshash.service.app`)."""

from .app import create_app, create_app_from_env

__all__ = ["create_app", "create_app_from_env"]
