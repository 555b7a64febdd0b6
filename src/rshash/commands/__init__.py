"""CLI subcommands: each module defines ``add_parser(subparsers)`` and sets ``func`` on its parser."""
