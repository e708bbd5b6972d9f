"""The LCLStream transfer API (FastAPI), independent of how callers authenticate.

``build_app(store, principal)`` serves::

    POST   /v1/transfers            a streamer config or a TransferRequest -> TransferStatus (201)
    GET    /v1/transfers            ?state=&limit=  -> {count, data: [TransferStatus]}
    GET    /v1/transfers/{id}       TransferDetail: state, task states, live buffer metrics
    DELETE /v1/transfers/{id}       cancel -> {message}
    GET    /v1/warm-pools           {count, data: [warm pool: role, jobs, counters, events]}
    GET    /ui                      the transfers page (polls the JSON API)

``principal`` is a FastAPI dependency returning the caller's :class:`Principal`: the Airflow
plugin derives it from Airflow's JWT, the standalone server from the client certificate.
Users see and cancel only their own transfers unless ``Principal.admin``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import anyio
import yaml
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse

from airflow_provider_lclstream.api.metrics import combine_metrics, fetch_metrics
from airflow_provider_lclstream.api.models import (
    ACTIVE_STATES,
    DAG_ID,
    BufferView,
    Message,
    SubmissionError,
    TransferDetail,
    TransfersPublic,
    TransferState,
    TransferStatus,
    check_user,
    parse_submission,
)
from airflow_provider_lclstream.api.store import (
    TransferFinished,
    TransferNotFound,
    TransferRecord,
    TransferStore,
)
from airflow_provider_lclstream.api.subscriptions import MemorySubscriptionStore
from airflow_provider_lclstream.api.ui import ui_page
from airflow_provider_lclstream.config.consumers import ConsumerTemplates
from airflow_provider_lclstream.config.transfer import TransferRequest
from airflow_provider_lclstream.transfer.layout import METRICS_URL, OUTPUT_URL
from airflow_provider_lclstream.transfer.request import InvalidTransferRequest, with_consumer

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send
    from starlette.types import Message as AsgiMessage

    from airflow_provider_lclstream.api.subscriptions import SubscriptionStore

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 1 << 20
TRANSFER_ID = r"^[A-Za-z0-9_.:+~-]{1,250}$"
TransferId = Annotated[str, Path(pattern=TRANSFER_ID, description="the transfer (DAG run) id")]


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user name (goes into the DAG run conf) and whether they see all."""

    name: str
    admin: bool = False
    #: manages every subscription (inside Airflow: may write Airflow Variables, which hold them)
    subscription_admin: bool = False


PrincipalDep = Callable[..., Principal | Awaitable[Principal]]


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413 (by Content-Length or as they stream)."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        chunks: list[AsgiMessage] = []
        size = 0
        if scope.get("method") in ("POST", "PUT", "PATCH"):
            while True:
                message = await receive()
                chunks.append(message)
                size += len(message.get("body", b""))
                if size > self.max_bytes:
                    await self._refuse(scope, receive, send)
                    return
                if message["type"] != "http.request" or not message.get("more_body"):
                    break

        async def replay() -> AsgiMessage:
            return chunks.pop(0) if chunks else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse(
            {"detail": f"request body larger than {self.max_bytes} bytes"}, status_code=413
        )
        await response(scope, receive, send)


def _problems_response(
    kind: str, problems: list[tuple[str, str]], prefix: tuple[str, ...] = ("body",)
) -> JSONResponse:
    """422 naming each bad field; the submitted values are never echoed."""
    detail = [{"loc": [*prefix, *f.split(".")], "field": f, "msg": m} for f, m in problems]
    return JSONResponse({"kind": kind, "detail": detail}, status_code=422)


def _inline_refs(node: Any, defs: dict[str, Any]) -> Any:
    """A pydantic JSON schema with its ``$defs`` references written out in place."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline_refs(defs[ref.rsplit("/", 1)[1]], defs)
        return {k: _inline_refs(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline_refs(v, defs) for v in node]
    return node


def _submission_body() -> dict[str, Any]:
    """The POST body in the OpenAPI: a TransferRequest, or a streamer config (any object)."""
    request = TransferRequest.model_json_schema()
    config = {"type": "object", "title": "Streamer config", "additionalProperties": True}
    schema = {"anyOf": [_inline_refs(request, request.get("$defs", {})), config]}
    example = {"synthetic": True, "events": 100}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": schema, "example": example},
                "application/yaml": {"schema": schema, "example": example},
            },
        }
    }


_ERROR = {"content": {"application/json": {"schema": {"type": "object"}}}}
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "no credentials", **_ERROR},
    403: {"description": "not allowed", **_ERROR},
    422: {"description": "invalid request; each bad field is named", **_ERROR},
}


def _status(record: TransferRecord) -> TransferStatus:
    return TransferStatus(
        id=record.id,
        state=record.state,
        url=record.url,
        transport=record.transport,
        user=record.user,
        created=record.created,
        label=record.label,
        subscription=record.subscription,
    )


async def _read_body(request: Request) -> Any:
    raw = await request.body()
    ctype = request.headers.get("content-type", "application/json").split(";")[0].strip()
    try:
        if ctype in ("application/yaml", "application/x-yaml", "text/yaml"):
            return yaml.safe_load(raw)
        return json.loads(raw)
    except (ValueError, yaml.YAMLError) as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "lineno", None)
        raise HTTPException(422, f"body is not valid {ctype} (near {mark})") from None


def build_app(
    store: TransferStore,
    principal: PrincipalDep,
    *,
    title: str = "LCLStream API",
    airflow_base_url: str | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    consumer_templates: Callable[[], ConsumerTemplates] = ConsumerTemplates,
    subscriptions: SubscriptionStore | None = None,
    experiment_managers: Callable[[], dict[str, str]] = dict,
    warm_pools: Callable[[], list[dict[str, Any]]] = list,
) -> FastAPI:
    """The API app over ``store``; ``airflow_base_url`` adds a link to each DAG run.

    ``subscriptions`` serves ``/v1/subscriptions`` (an in-memory store when None: tests);
    ``experiment_managers`` gives ``[lclstream] experiment_managers`` (user -> regex).
    ``warm_pools`` gives the warm streamer pools (``hooks/warm_pool.py``: ``pool_summaries``).

    ``consumer_templates`` gives the admin's templates (read per request, so edits apply at
    once): a request's ``consumer_template`` is checked against them here (422), and a raw
    ``consumer_command`` from a caller who is not an admin is refused (403).
    """
    app = FastAPI(title=title, version="1", docs_url="/docs", redoc_url=None)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [(".".join(str(p) for p in e["loc"]), str(e["msg"])) for e in exc.errors()]
        return _problems_response("request", problems, prefix=())

    def _owned(record: TransferRecord, caller: Principal) -> TransferRecord:
        if not caller.admin and record.user != caller.name:
            raise HTTPException(404, "no such transfer")  # do not reveal others' transfers
        return record

    async def _load(transfer_id: str, caller: Principal) -> TransferRecord:
        try:
            record = await anyio.to_thread.run_sync(store.get, transfer_id)
        except TransferNotFound:
            raise HTTPException(404, "no such transfer") from None
        return _owned(record, caller)

    @app.post(
        "/v1/transfers",
        status_code=201,
        response_model=TransferStatus,
        openapi_extra=_submission_body(),
        responses={**_ERRORS, 413: {"description": "body too large", **_ERROR}},
    )
    async def create_transfer(request: Request, caller: Principal = Depends(principal)) -> Any:
        """Start a transfer: body is a streamer config (JSON or YAML) or a TransferRequest."""
        body = await _read_body(request)
        try:
            user = check_user(caller.name)
            submission = parse_submission(body)
        except SubmissionError as err:
            return _problems_response(err.kind, err.problems)
        if submission.kind == "request":
            wanted = TransferRequest.model_validate(submission.document)
            if wanted.consumer_command and not caller.admin:
                raise HTTPException(
                    403,
                    "consumer_command (a raw shell command) is for admins only; choose a "
                    "consumer_template",
                )
            try:
                templates = await anyio.to_thread.run_sync(consumer_templates)
                with_consumer(wanted, templates, admin=caller.admin, caller=caller.name)
            except (InvalidTransferRequest, ValueError) as err:
                return _problems_response("request", [("consumer_template", str(err))])
        record = await anyio.to_thread.run_sync(store.create, submission, user)
        return _status(record)

    @app.get("/v1/transfers", response_model=TransfersPublic, responses=_ERRORS)
    async def list_transfers(
        caller: Principal = Depends(principal),
        state: TransferState | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        all_users: bool = False,
    ) -> TransfersPublic:
        """Your transfers, newest first (an admin's ``all_users=true`` lists everyone's)."""
        user = None if (caller.admin and all_users) else caller.name
        records = await anyio.to_thread.run_sync(
            lambda: store.list(user=user, state=state, limit=limit)
        )
        data = [_status(r) for r in records]
        return TransfersPublic(count=len(data), data=data)

    @app.get(
        "/v1/transfers/{transfer_id}",
        response_model=TransferDetail,
        responses={**_ERRORS, 404: {"description": "no such transfer", **_ERROR}},
    )
    async def get_transfer(
        transfer_id: TransferId, caller: Principal = Depends(principal)
    ) -> TransferDetail:
        """State, per-task states, live buffer metrics while active, final stats when done."""
        record = await _load(transfer_id, caller)
        metrics = None
        buffers = [
            BufferView(
                index=int(b.get("index", i)),
                url=b.get(OUTPUT_URL),
                metrics_url=b.get(METRICS_URL),
            )
            for i, b in enumerate(record.buffers)
        ]
        live = [b for b in buffers if (b.metrics_url or "").startswith(("http://", "https://"))]
        if live and record.state in ACTIVE_STATES:
            for view in live:
                view.metrics = await fetch_metrics(str(view.metrics_url), record.batch_size)
            metrics = combine_metrics([b.metrics for b in live if b.metrics is not None])
        link = None
        if airflow_base_url is not None:
            link = f"{airflow_base_url.rstrip('/')}/dags/{DAG_ID}/runs/{record.id}"
        return TransferDetail(
            **_status(record).model_dump(exclude={"requested_by", "created_at"}),
            dag_run_state=record.dag_run_state,
            tasks=record.tasks,
            metrics=metrics,
            buffers=buffers if len(buffers) > 1 else [],
            final=record.final,
            airflow_url=link,
        )

    @app.delete(
        "/v1/transfers/{transfer_id}",
        response_model=Message,
        responses={
            **_ERRORS,
            404: {"description": "no such transfer", **_ERROR},
            409: {"description": "the transfer already ended", **_ERROR},
        },
    )
    async def cancel_transfer(
        transfer_id: TransferId, caller: Principal = Depends(principal)
    ) -> Any:
        """Cancel: stop the work tasks so the teardown cancels every job."""
        await _load(transfer_id, caller)
        try:
            await anyio.to_thread.run_sync(store.cancel, transfer_id, caller.name)
        except TransferFinished as err:
            return JSONResponse({"message": str(err)}, status_code=409)
        return Message(message=f"transfer {transfer_id} canceled")

    from airflow_provider_lclstream.api.subscription_routes import subscription_router

    app.include_router(
        subscription_router(
            subscriptions if subscriptions is not None else MemorySubscriptionStore(),
            principal,
            consumer_templates,
            experiment_managers,
        )
    )

    @app.get("/v1/warm-pools", responses=_ERRORS)
    async def list_warm_pools(caller: Principal = Depends(principal)) -> dict[str, Any]:
        """The warm pools (streamers and buffers): standby jobs, counters (claimed, fallbacks,
        dead, expired) and recent events. Every signed-in user may read them (they name no
        user's data)."""
        pools = await anyio.to_thread.run_sync(warm_pools)
        return {"count": len(pools), "data": pools}

    @app.get("/ui", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        """The transfers page; its data comes from the JSON API with the caller's credentials."""
        return HTMLResponse(ui_page(), headers={"Cache-Control": "no-store"})

    return app
