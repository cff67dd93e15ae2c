"""``marginbook api``: a JSON read API over the current risk views (FastAPI).

The views come from a :class:`projections.reader.RiskStore` kept up to date by tailing the risk
and alerts topics (``read_committed``) on the server's own event loop. Bodies are exactly the
contract's views (``spec/contract.md``: decimals as strings, ``""`` where a value does not
apply); every response about one key carries ``X-Marginbook-Seq``, the outcome position the
view reflects. The OpenAPI description is served on ``/openapi.json`` (and ``/docs``); a copy
is kept in ``docs/openapi.json`` (``marginbook api --print-openapi``).

Response schemas are derived from the msgspec view structs of ``projections.views`` and
``projections.publish`` — the contract's field list lives there only.
"""

from __future__ import annotations

import asyncio
import contextlib
import typing
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec
import uvicorn
from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import Response
from pydantic import BaseModel, create_model

from projections.publish import AlertView
from projections.reader import RiskStore, ratio_of, tail
from projections.views import AccountView, PositionView

_encode = msgspec.json.Encoder().encode
_models: dict[type, type[BaseModel]] = {}


def _list_of(item: Any) -> Any:
    return list[item]


def model_of(struct: type[msgspec.Struct]) -> type[BaseModel]:
    """A pydantic model with the fields of a msgspec view struct (for the OpenAPI schema)."""
    if struct in _models:
        return _models[struct]
    fields: dict[str, Any] = {}
    for name, hint in typing.get_type_hints(struct).items():
        if typing.get_origin(hint) is list:
            (inner,) = typing.get_args(hint)
            if isinstance(inner, type) and issubclass(inner, msgspec.Struct):
                hint = _list_of(model_of(inner))
        fields[name] = (hint, ...)
    model: type[BaseModel] = create_model(struct.__name__, __doc__=struct.__doc__, **fields)
    _models[struct] = model
    return model


AccountModel = model_of(AccountView)
PositionModel = model_of(PositionView)
AlertModel = model_of(AlertView)


AccountList: type[BaseModel] = create_model(
    "AccountList",
    __doc__="Accounts in the order asked for; ``total`` counts every account held, before ``limit``.",
    accounts=(_list_of(AccountModel), ...),
    total=(int, ...),
)
PositionList: type[BaseModel] = create_model("PositionList", positions=(_list_of(PositionModel), ...))
AlertList: type[BaseModel] = create_model("AlertList", alerts=(_list_of(AlertModel), ...))


class Health(BaseModel):
    ready: bool
    accounts: int
    positions: int
    alerts: int
    records: int
    #: Highest ``seq`` header seen per partition (= shard) of the risk topic.
    lastSeq: dict[str, int]


class NotFound(BaseModel):
    detail: str


def _json(body: Any, status: int = 200, seq: int | None = None) -> Response:
    headers = {"X-Marginbook-Seq": str(seq)} if seq is not None else None
    return Response(_encode(body), status_code=status, media_type="application/json", headers=headers)


_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": NotFound, "description": "no such key"}}


def create_app(store: RiskStore, tail_from: tuple[str, str, str] | None = None) -> FastAPI:
    """The API over ``store``; with ``tail_from = (bootstrap, risk topic, alerts topic)`` the
    app tails those topics into the store for as long as it runs."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(tail(store, *tail_from)) if tail_from else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    app = FastAPI(
        title="marginbook risk API",
        version="1",
        description=(
            "Current risk views of marginbook accounts and positions, and recent margin-call and "
            "liquidation alerts, as published by `marginbook project` on the compacted risk topic. "
            "Numbers are decimal strings; a value that does not apply is the empty string. "
            "`mgnRatio` >= 1 is healthy, <= 3 is a margin call, <= 1 liquidates."
        ),
        lifespan=lifespan,
    )

    @app.get("/accounts/{acct}", response_model=AccountModel, responses=_NOT_FOUND, summary="One account's view")
    async def get_account(acct: str) -> Response:
        view = store.accounts.get(acct)
        if view is None:
            raise HTTPException(404, detail=f"no account {acct!r}")
        return _json(view, seq=store.seqs.get(acct))

    @app.get("/accounts/{acct}/positions", response_model=PositionList, summary="The open positions of one account")
    async def get_account_positions(acct: str) -> Response:
        return _json({"positions": store.account_positions(acct)})

    @app.get(
        "/positions/{acct}/{instId}/{posSide}",
        response_model=PositionModel,
        responses=_NOT_FOUND,
        summary="One position's view",
    )
    async def get_position(acct: str, instId: str, posSide: str) -> Response:
        key = f"{acct}/{instId}/{posSide}"
        view = store.positions.get(key)
        if view is None:
            raise HTTPException(404, detail=f"no position {key!r}")
        return _json(view, seq=store.seqs.get(key))

    @app.get("/accounts", response_model=AccountList, summary="Accounts, riskiest first")
    async def list_accounts(
        sort: Annotated[
            Literal["mgnRatio", "acct"],
            Query(description="`mgnRatio`: lowest ratio first, accounts without a ratio last; `acct`: by name"),
        ] = "mgnRatio",
        limit: Annotated[int, Query(ge=1, le=100_000)] = 100,
        maxRatio: Annotated[
            Decimal | None, Query(description="only accounts whose mgnRatio is at most this, riskiest first (e.g. 3)")
        ] = None,
    ) -> Response:
        chosen: list[dict[str, Any]] = []
        if maxRatio is not None:
            for view in store.riskiest(len(store.accounts)):
                ratio = ratio_of(view)
                if ratio is None or ratio > maxRatio or len(chosen) >= limit:
                    break
                chosen.append(view)
        else:
            chosen = store.riskiest(limit) if sort == "mgnRatio" else store.by_name(limit)
        return _json({"accounts": chosen, "total": len(store.accounts)})

    @app.get("/alerts", response_model=AlertList, summary="Recent alerts, newest first")
    async def list_alerts(
        limit: Annotated[int, Query(ge=1, le=10_000)] = 50,
        acct: Annotated[str | None, Query(description="only this account's alerts")] = None,
    ) -> Response:
        if acct is None:
            alerts = store.recent_alerts(limit)
        else:
            alerts = [a for a in store.recent_alerts(store.alert_count) if a.get("acct") == acct][:limit]
        return _json({"alerts": alerts})

    @app.get(
        "/healthz",
        response_model=Health,
        responses={503: {"model": Health, "description": "still reading the topics"}},
        summary="Ready once the topics were read to their end",
    )
    async def healthz() -> Response:
        body = {
            "ready": store.ready,
            "accounts": len(store.accounts),
            "positions": len(store.positions),
            "alerts": store.alert_count,
            "records": store.records,
            "lastSeq": {str(p): s for p, s in sorted(store.last_seq.items())},
        }
        return _json(body, status=200 if store.ready else 503)

    return app


def openapi_document() -> dict[str, Any]:
    """The OpenAPI description (what ``/openapi.json`` serves)."""
    return create_app(RiskStore()).openapi()


class _Server(uvicorn.Server):
    """uvicorn, with the service's own signal handlers (see :func:`serve`)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(store: RiskStore, bootstrap: str, risk: str, alerts: str, host: str, port: int) -> None:
    """Run the API with uvicorn until SIGINT/SIGTERM, then shut down gracefully and return
    (exit code 0: uvicorn's own handlers would re-raise the signal after shutting down)."""
    import signal

    app = create_app(store, (bootstrap, risk, alerts))
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="on")
    server = _Server(config)
    loop = asyncio.get_running_loop()

    def _exit() -> None:
        server.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _exit)
    await server.serve()
