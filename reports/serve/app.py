"""The server's application: the demo and its API, the live study view and the report, each on when given.

Routes:

- ``/``: the demo page (``static/index.html``), for a model; else a redirect to the report or dashboard;
- ``POST /api/predict``, ``GET /api/model``: the model's answers and card; ``/docs``: the API's schema;
- ``/dashboard/``: optuna-dashboard for a storage (:mod:`reports.serve.dashboard`);
- ``/report/``: an experiment's report folder, and nothing outside it;
- ``/healthz``: which parts are on.

Every error is JSON, ``{"detail": "..."}`` in one line; no traceback reaches a client.

Example:
    >>> app = build_app(classifier=Classifier(Path("runs/best/model")), storage=open_storage(url, create=False))
    >>> uvicorn.run(app, host="127.0.0.1", port=8000)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from optuna.storages import BaseStorage

from reports.serve.batcher import MicroBatcher
from reports.serve.card import model_card
from reports.serve.classifier import Classifier
from reports.serve.dashboard import dashboard_app
from reports.serve.limits import BodyLimit
from reports.serve.schemas import Health, ModelCard, Parts, Prediction, PredictRequest, Problem

STATIC = Path(__file__).parent / "static"
# 1 MiB: room for the most texts a request may hold (256) at 4 KiB each, far past any model's limit.
MAX_BODY_BYTES = 2**20


def build_app(
    *, classifier: Classifier | None = None, storage: BaseStorage | None = None, report: Path | None = None
) -> FastAPI:
    """The server for the parts given; at least one is needed.

    Args:
        classifier: The model of the demo page and ``/api/predict``.
        storage: The studies of ``/dashboard/``, opened by the caller (read-only use).
        report: The folder served under ``/report/``: an experiment's ``report/``, with ``index.html``.
    """
    if classifier is None and storage is None and report is None:
        raise ValueError("build_app needs a classifier, a storage or a report folder")
    batcher = MicroBatcher(classifier.predict) if classifier is not None else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if batcher is not None:
            await batcher.start()
        try:
            yield
        finally:
            if batcher is not None:
                await batcher.stop()

    # FastAPIOffline serves /docs' scripts itself: FastAPI's own page fetches them from a CDN.
    app = FastAPIOffline(
        title="toxitune",
        summary="A toxicity classifier trained by toxitune.",
        redoc_url=None,
        static_url="/docs-assets",
        lifespan=lifespan,
        responses={422: {"model": Problem}},
    )
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(Exception, _internal_error)
    parts = Parts(demo=classifier is not None, dashboard=storage is not None, report=report is not None)

    @app.get("/healthz", tags=["server"])
    async def healthz() -> Health:
        """Whether the server is up, and which of its parts are on."""
        return Health(parts=parts)

    if classifier is not None:
        _add_demo(app, classifier, batcher)
    else:
        landing = "/report/" if report is not None else "/dashboard/"

        @app.get("/", include_in_schema=False)
        async def index() -> RedirectResponse:
            return RedirectResponse(landing)

        @app.post("/api/predict", include_in_schema=False)
        async def no_model() -> JSONResponse:
            return JSONResponse({"detail": "this server has no model; start it with --model DIR"}, 404)

    if report is not None:
        # Starlette resolves each path and answers 404 to any outside ``report``, links included.
        app.mount("/report", StaticFiles(directory=report, html=True), name="report")
    if storage is not None:
        app.mount("/", dashboard_app(storage), name="dashboard")
    return app


def _add_demo(app: FastAPI, classifier: Classifier, batcher: MicroBatcher[Prediction]) -> None:
    card = model_card(classifier)

    @app.get("/", include_in_schema=False)
    async def demo() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/assets", StaticFiles(directory=STATIC), name="assets")

    @app.get("/api/model", tags=["model"])
    async def model() -> ModelCard:
        """The served model: its folder, method, labels, size and test metrics."""
        return card

    @app.post(
        "/api/predict",
        tags=["model"],
        dependencies=[Depends(_json_body)],
        responses={413: {"model": Problem}, 415: {"model": Problem}},
    )
    async def predict(request: PredictRequest) -> Prediction | list[Prediction]:
        """Classify ``text`` (one answer) or ``texts`` (a list of answers, in order).

        Requests that arrive while the model runs are batched together.
        """
        if request.text is not None:
            [answer] = await batcher([request.text])
            return answer
        return await batcher(request.texts)


def _json_body(request: Request) -> None:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        raise HTTPException(
            415, f"send the body as JSON, with Content-Type: application/json (got {media or 'none'})"
        )


async def _invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
    """422 with the first problem in one line, ``texts.3: empty text``, instead of pydantic's list."""
    problems = error.errors()
    first = problems[0]
    if first["type"] == "json_invalid":
        message = f"invalid JSON at character {first['loc'][-1]}: {first['ctx']['error']}"
    elif first["type"] == "missing" and tuple(first["loc"]) == ("body",):
        message = 'no body; send a JSON object with "text" or "texts"'
    else:
        where = ".".join(str(part) for part in first["loc"][1:])  # after "body"
        message = first["msg"].removeprefix("Value error, ")
        message = f"{where}: {message}" if where else message
    if len(problems) > 1:
        message += f" (and {len(problems) - 1} more)"
    return JSONResponse({"detail": message}, status_code=422)


async def _internal_error(request: Request, error: Exception) -> JSONResponse:
    # The traceback goes to the server's log (uvicorn logs what Starlette re-raises), never to the client.
    return JSONResponse({"detail": "internal error; the server's log has the details"}, status_code=500)
