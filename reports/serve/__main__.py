"""The web server: ``python -m reports.serve [--model DIR] [--storage URL] [--experiment DIR]``.

Each option turns on a part (see :mod:`reports.serve.app`): ``--model`` the demo page and
``/api/predict``, ``--storage`` the live study view at ``/dashboard/``, ``--experiment`` its report at
``/report/``. Everything is checked before the server listens: a model folder without safetensors
weights or with code of its own, a storage that does not open, a missing report or a busy port is one
``error:`` line and exit 2. It listens on 127.0.0.1 unless ``--host`` says otherwise, with a warning.
"""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path

from search.urls import redact
from trainers.cli import ArgumentParser, run_main
from trainers.errors import ConfigError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
# The modules of the ``serve`` extra (pyproject.toml), which a core install lacks.
SERVE_EXTRA = frozenset({"fastapi", "fastapi_offline", "starlette", "uvicorn", "optuna_dashboard", "a2wsgi"})


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python -m reports.serve",
        description="Serve the model's demo, the live studies and the experiment's report.",
    )
    parser.add_argument(
        "--model",
        type=Path,
        help="model folder that trainers.train or search.train wrote (OUT/model), or an experiment's "
        "METHOD/tuned/model: the demo page at / and POST /api/predict",
    )
    parser.add_argument(
        "--storage",
        help="Optuna storage URL of the studies shown at /dashboard/ (e.g. sqlite:///toxitune.db)",
    )
    parser.add_argument(
        "--experiment", type=Path, help="search.experiment folder whose report/ is served at /report/"
    )
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to listen on (default: {DEFAULT_HOST}, this machine only; another warns)",
    )
    parser.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT}; 0: any free one)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.model is None and args.storage is None and args.experiment is None:
        parser.error("give at least one of --model, --storage or --experiment")
    report = None
    if args.experiment is not None:
        report = args.experiment / "report"
        if not (report / "index.html").is_file():
            raise ConfigError(
                f"--experiment {args.experiment}: no report/index.html; "
                f"run python -m reports.compare --experiment {args.experiment} first"
            )
    try:
        # Imported once the arguments are good; the serve extra is optional.
        import uvicorn

        from reports.serve.app import build_app
        from reports.serve.classifier import Classifier
    except ImportError as error:
        if error.name not in SERVE_EXTRA:
            raise
        raise ConfigError(
            f"the web server needs the serve extra ({error.name} is missing): pip install -e '.[serve]'"
        ) from error
    from search.storage import open_storage

    storage = open_storage(args.storage, create=False) if args.storage else None
    classifier = Classifier(args.model) if args.model is not None else None
    app = build_app(classifier=classifier, storage=storage, report=report)
    listener = _listen(args.host, args.port)
    warning = warning_for_host(args.host)
    if warning:
        print(warning, file=sys.stderr)
    port = listener.getsockname()[1]
    address = f"[{args.host}]" if ":" in args.host else args.host
    parts = [
        *(["the demo"] if classifier else []),
        *([f"the studies of {redact(args.storage)}"] if storage else []),
        *(["the report"] if report else []),
    ]
    print(f"serving {', '.join(parts)} at http://{address}:{port}/ (Ctrl-C stops)", flush=True)
    try:
        uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[listener])
    except KeyboardInterrupt:  # how a server is stopped, not a failure
        pass
    return 0


def _port(text: str) -> int:
    port = int(text) if text.isdigit() else -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is a number from 0 to 65535, but got {text!r}")
    return port


def warning_for_host(host: str) -> str | None:
    """The warning that listening on ``host`` deserves: ``None`` for this machine's loopback only."""
    if host in LOOPBACK:
        return None
    return f"warning: listening on {host}: anyone who can reach it can use the model and read the studies"


def _listen(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port``, bound here so that a busy port is a one-line error."""
    # Made with an explicit IPPROTO_TCP: asyncio turns Nagle's algorithm off only on sockets that say
    # so, and with it on, every answer on a kept-alive connection waits ~40 ms for a delayed ACK.
    listener = socket.socket(_family(host), socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen()
    except OSError as error:
        listener.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({error.strerror or error})") from error
    return listener


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


if __name__ == "__main__":
    run_main(main)
