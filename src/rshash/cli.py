"""The ``rshash`` command: subcommands live in :mod:`rshash.commands`, one module each."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

#: Subcommand modules, in the order the help lists them.
COMMANDS = ("data", "train", "quantize", "index", "search", "export", "evaluate", "serve", "run")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rshash", description="Remote-sensing image retrieval with deep hashing.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"rshash.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"rshash.commands.{name}":
                continue  # subcommand not implemented in this build
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        # Expected user-facing failures (bad paths, mismatched model/index...): one clear line.
        logging.getLogger("rshash").debug("error", exc_info=True)
        print(f"rshash {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
