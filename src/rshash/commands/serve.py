"""``rshash serve``: the search web page and HTTP API over an index."""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
from pathlib import Path

log = logging.getLogger("rshash.serve")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve a search page and HTTP API over an index",
        description="Serve INDEX_DIR over HTTP: a search page at /, the JSON API under /api "
        "(reference at /docs, schema at /openapi.json) and /healthz.",
    )
    parser.add_argument("--index", required=True, type=Path, metavar="INDEX_DIR")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer requests whose Host header is NAME (repeatable; '*': any). Always answered: 127.0.0.1, "
        "localhost, [::1] and the --host value; others get 400, which stops DNS-rebinding pages",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="worker processes sharing the port (default 1); each opens the index and loads the model",
    )
    parser.add_argument("--max-upload-mb", type=float, default=20, help="largest query image accepted (default 20)")
    parser.add_argument("--model", type=Path, metavar="MODEL_DIR", help="model directory if the recorded one moved")
    parser.add_argument("--no-access-log", action="store_true", help="do not log every request")
    parser.set_defaults(func=run)


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket on ``host:port`` (port 0: a free one), so the real port is known."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be IPPROTO_TCP (not 0): asyncio sets TCP_NODELAY on accepted connections only then,
    # and without it every keep-alive response waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise RuntimeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.set_inheritable(True)
    return sock


def run(args: argparse.Namespace) -> int:
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from ..index import Index
    from ..service.app import CONFIG_ENV
    from ..service.limits import served_hosts

    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be in 0..65535, got {args.port}")
    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    with Index.open(args.index, args.model) as index:  # fails here, with one clear line, if it cannot be served
        stats = index.stats()
    hosts = served_hosts(args.host, args.allowed_host)
    if args.host in ("0.0.0.0", "::") and not args.allowed_host:
        log.warning("listening on every interface, but only the Host names %s are answered: add "
                    "--allowed-host NAME for each name clients use to reach this machine", ", ".join(hosts))
    # Every worker (and a single in-process server) builds its app from these create_app arguments.
    os.environ[CONFIG_ENV] = json.dumps({
        "index_dir": str(args.index),
        "model_dir": None if args.model is None else str(args.model),
        "max_upload_mb": args.max_upload_mb,
        "preload_model": True,
        "allowed_hosts": hosts,
    })
    sock = bind(args.host, args.port)
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        "rshash.service.app:create_app_from_env",
        factory=True,
        host=args.host,
        port=port,
        workers=args.workers,
        log_level="info",
        access_log=not args.no_access_log,
        timeout_graceful_shutdown=5,
    )
    if args.workers == 1:
        config.load()  # in this process: the model is loaded before the address is printed
    shown_host = f"[{args.host}]" if ":" in args.host else args.host
    # One line with the real address (also for --port 0), before uvicorn's own log.
    print(
        f"rshash serve: {stats['images']} images ({stats['bits']}-bit codes) at http://{shown_host}:{port}/ "
        f"(API reference: http://{shown_host}:{port}/docs; {args.workers} worker"
        f"{'s' if args.workers > 1 else ''}; Host names answered: {', '.join(hosts)})",
        flush=True,
    )
    sys.stdout.flush()
    if args.workers == 1:
        uvicorn.Server(config).run(sockets=[sock])
    else:
        Multiprocess(config, sockets=[sock]).run()
    return 0
