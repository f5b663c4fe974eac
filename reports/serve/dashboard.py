"""The live study view: optuna-dashboard's WSGI app for a storage, read-only, for an ASGI server.

optuna-dashboard's page asks for ``/dashboard``, ``/static/…`` and ``/api/…`` at the site's root,
so :func:`reports.serve.app.build_app` mounts it at ``/``, after every route of its own. It is
read-only here: ``reports/`` reads studies and never writes them, and a dashboard left open beside a
running study should not be able to delete it. Every trial's user attributes are on its page; a trial
tracked by W&B online has its run's page in ``wandb_url`` (and ``wandb_run``, its path).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from a2wsgi import WSGIMiddleware
from optuna.storages import BaseStorage
from optuna_dashboard import wsgi

# What a browser may ask of a read-only view.
READ_METHODS = frozenset({"GET", "HEAD"})


def dashboard_app(storage: BaseStorage) -> Any:
    """An ASGI app that serves optuna-dashboard for ``storage``, refusing every request that writes."""
    return WSGIMiddleware(read_only(wsgi(storage)))


def read_only(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """The WSGI ``app``, answering 405 with a JSON ``detail`` to any request that is not a read."""

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ["REQUEST_METHOD"] in READ_METHODS:
            return app(environ, start_response)
        body = json.dumps({"detail": "the dashboard is read-only here: reports.serve never changes a study"})
        start_response(
            "405 Method Not Allowed",
            [("Content-Type", "application/json"), ("Allow", ", ".join(sorted(READ_METHODS)))],
        )
        return [body.encode()]

    return guarded
