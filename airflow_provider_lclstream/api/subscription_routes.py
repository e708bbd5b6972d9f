"""``/v1/subscriptions``: create, list, read, change and delete subscriptions; their audit; the
run starts no subscription matched. Mounted by :func:`~.app.build_app` in both deployments.

::

    POST   /v1/subscriptions               SubscriptionSpec -> {subscription, warnings} (201)
    GET    /v1/subscriptions               ?all_users=true (admins) -> {count, data}
    GET    /v1/subscriptions/audit         ?subscription=&limit= -> {count, data: [AuditEntry]}
    GET    /v1/subscriptions/unmatched     ?limit= -> {count, data: [run-start events]}
    GET    /v1/subscriptions/{id}          Subscription
    PATCH  /v1/subscriptions/{id}          SubscriptionPatch -> {subscription, warnings}
    DELETE /v1/subscriptions/{id}          {message}
    GET    /v1/subscriptions/{id}/audit    {count, data: [AuditEntry]}

Owners see and change their own subscriptions; admins all (404 for others', never revealed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import anyio
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from airflow_provider_lclstream.api import subscriptions as service
from airflow_provider_lclstream.api.app import (
    _ERROR,
    _ERRORS,
    Principal,
    _inline_refs,
    _problems_response,
    _read_body,
)
from airflow_provider_lclstream.api.models import Message
from airflow_provider_lclstream.api.subscriptions import (
    SubscriptionForbidden,
    SubscriptionInvalid,
    SubscriptionNotFound,
    SubscriptionSaved,
    SubscriptionStore,
    UnmatchedRunStarts,
)
from airflow_provider_lclstream.config.subscriptions import (
    AuditEntry,
    Subscription,
    SubscriptionPatch,
    SubscriptionSpec,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_provider_lclstream.api.app import PrincipalDep
    from airflow_provider_lclstream.config.consumers import ConsumerTemplates

SubscriptionId = Annotated[
    str, Path(pattern=r"^sub[0-9]{1,9}$", description="the subscription id, e.g. sub3")
]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "no such subscription", **_ERROR}
}


def _body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The request body in the OpenAPI (the routes read and validate the raw body themselves,
    to accept YAML and to name bad fields as the transfer routes do)."""
    schema = model.model_json_schema()
    schema = _inline_refs(schema, schema.get("$defs", {}))
    content = {"schema": schema}
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": content, "application/yaml": content},
        }
    }


class SubscriptionsPublic(BaseModel):
    count: int
    data: list[Subscription]


class AuditPublic(BaseModel):
    count: int
    data: list[AuditEntry]


def _is_admin(caller: Principal) -> bool:
    return caller.admin or caller.subscription_admin


def _problems(exc: ValidationError) -> list[tuple[str, str]]:
    out = []
    for err in exc.errors(include_input=False, include_url=False):
        ctx = err.get("ctx") or {}
        out.append(
            (
                ".".join(str(p) for p in err["loc"]) or "body",
                str(ctx["error"]) if "error" in ctx else err["msg"],
            )
        )
    return out


def subscription_router(
    store: SubscriptionStore,
    principal: PrincipalDep,
    consumer_templates: Callable[[], ConsumerTemplates],
    experiment_managers: Callable[[], dict[str, str]],
) -> APIRouter:
    """The routes over ``store``; templates and managers are read per request (edits apply)."""
    router = APIRouter(prefix="/v1/subscriptions", tags=["subscriptions"])

    async def _run(func: Callable[[], Any]) -> Any:
        try:
            return await anyio.to_thread.run_sync(func)
        except SubscriptionNotFound:
            raise HTTPException(404, "no such subscription") from None
        except SubscriptionForbidden as err:
            raise HTTPException(403, str(err)) from None

    async def _body(request: Request, model: type[BaseModel]) -> Any:
        body = await _read_body(request)
        if not isinstance(body, dict):
            return _problems_response("subscription", [("body", "expected a JSON object")])
        try:
            return model.model_validate(body)
        except ValidationError as err:
            return _problems_response("subscription", _problems(err))

    def _context() -> tuple[ConsumerTemplates, dict[str, str]]:
        return consumer_templates(), experiment_managers()

    @router.post(
        "",
        status_code=201,
        response_model=SubscriptionSaved,
        responses={**_ERRORS, 413: {"description": "body too large", **_ERROR}},
        openapi_extra=_body_schema(SubscriptionSpec),
    )
    async def create_subscription(request: Request, caller: Principal = Depends(principal)) -> Any:
        """Save a subscription (JSON or YAML); ``warnings`` name overlapping ones."""
        spec = await _body(request, SubscriptionSpec)
        if isinstance(spec, JSONResponse):
            return spec

        def create() -> SubscriptionSaved:
            templates, managers = _context()
            return service.create(store, spec, caller.name, _is_admin(caller), templates, managers)

        try:
            return await _run(create)
        except SubscriptionInvalid as err:
            return _problems_response("subscription", err.problems)

    @router.get("", response_model=SubscriptionsPublic, responses=_ERRORS)
    async def list_subscriptions(
        caller: Principal = Depends(principal), all_users: bool = False
    ) -> SubscriptionsPublic:
        """Your subscriptions (an admin's ``all_users=true``: everyone's), in id order."""
        book = await _run(store.read)
        data = service.visible(book, caller.name, _is_admin(caller) and all_users)
        return SubscriptionsPublic(count=len(data), data=data)

    @router.get("/audit", response_model=AuditPublic, responses=_ERRORS)
    async def audit(
        caller: Principal = Depends(principal),
        subscription: Annotated[str | None, Query(pattern=r"^sub[0-9]{1,9}$")] = None,
        limit: Annotated[int, Query(ge=1, le=10000)] = 100,
    ) -> AuditPublic:
        """Changes to your subscriptions (admins: all), newest first."""
        entries = await _run(
            lambda: service.audit_for(store, caller.name, _is_admin(caller), subscription, limit)
        )
        return AuditPublic(count=len(entries), data=entries)

    @router.get("/unmatched", response_model=UnmatchedRunStarts, responses=_ERRORS)
    async def unmatched(
        caller: Principal = Depends(principal),
        limit: Annotated[int, Query(ge=0, le=1000)] = 50,
    ) -> UnmatchedRunStarts:
        """Run starts that no enabled subscription matched: the count and the latest ones."""
        result: UnmatchedRunStarts = await _run(lambda: store.unmatched(limit))
        return result

    @router.get(
        "/{subscription_id}", response_model=Subscription, responses={**_ERRORS, **_NOT_FOUND}
    )
    async def get_subscription(
        subscription_id: SubscriptionId, caller: Principal = Depends(principal)
    ) -> Any:
        book = await _run(store.read)
        return await _run(
            lambda: service.find(book, subscription_id, caller.name, _is_admin(caller))
        )

    @router.patch(
        "/{subscription_id}",
        response_model=SubscriptionSaved,
        responses={**_ERRORS, **_NOT_FOUND, 413: {"description": "body too large", **_ERROR}},
        openapi_extra=_body_schema(SubscriptionPatch),
    )
    async def update_subscription(
        subscription_id: SubscriptionId, request: Request, caller: Principal = Depends(principal)
    ) -> Any:
        """Replace the fields given (``match``, ``template``, ``enabled``, ``description``)."""
        patch = await _body(request, SubscriptionPatch)
        if isinstance(patch, JSONResponse):
            return patch

        def update() -> SubscriptionSaved:
            templates, managers = _context()
            return service.update(
                store, subscription_id, patch, caller.name, _is_admin(caller), templates, managers
            )

        try:
            return await _run(update)
        except SubscriptionInvalid as err:
            return _problems_response("subscription", err.problems)

    @router.delete(
        "/{subscription_id}", response_model=Message, responses={**_ERRORS, **_NOT_FOUND}
    )
    async def delete_subscription(
        subscription_id: SubscriptionId, caller: Principal = Depends(principal)
    ) -> Message:
        await _run(
            lambda: service.delete(
                store, subscription_id, caller.name, _is_admin(caller), experiment_managers()
            )
        )
        return Message(message=f"subscription {subscription_id} deleted")

    @router.get(
        "/{subscription_id}/audit",
        response_model=AuditPublic,
        responses={**_ERRORS, **_NOT_FOUND},
    )
    async def subscription_audit(
        subscription_id: SubscriptionId,
        caller: Principal = Depends(principal),
        limit: Annotated[int, Query(ge=1, le=10000)] = 100,
    ) -> AuditPublic:
        """The changes of one subscription (also after it was deleted), newest first."""
        entries = await _run(
            lambda: service.audit_for(store, caller.name, _is_admin(caller), subscription_id, limit)
        )
        if not entries:
            raise HTTPException(404, "no such subscription")
        return AuditPublic(count=len(entries), data=entries)

    return router
