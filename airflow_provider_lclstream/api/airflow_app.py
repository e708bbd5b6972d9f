"""The API inside Airflow's API server: callers authenticate with Airflow's own JWT.

Airflow's ``get_user`` dependency reads the bearer token (or the UI's session cookie), so a
request without a valid token is refused with 401 (missing/expired) or 403 (invalid). The user
must also be allowed by Airflow's auth manager to act on runs of ``lclstream_transfer``
(GET to read, POST to start, PUT to cancel). Admins (see every transfer) are the names in
``[lclstream] api_admins`` (comma-separated; ``AIRFLOW__LCLSTREAM__API_ADMINS``); users who may
edit Airflow Variables also manage every subscription (the Variable that holds them is theirs to
edit anyway).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.api_fastapi.core_api.security import GetUserDep  # noqa: TC002 (FastAPI reads it)
from fastapi import HTTPException, Request

from airflow_provider_lclstream.api.app import Principal, build_app
from airflow_provider_lclstream.api.models import DAG_ID
from airflow_provider_lclstream.hooks import settings
from airflow_provider_lclstream.hooks.warm_pool import pool_summaries

if TYPE_CHECKING:
    from fastapi import FastAPI

    from airflow_provider_lclstream.api.store import TransferStore

_METHODS = {"GET": "GET", "HEAD": "GET", "POST": "POST", "DELETE": "PUT"}


async def airflow_principal(request: Request, user: GetUserDep) -> Principal:
    """The Airflow user behind the request's JWT, checked against DAG-run permissions."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import (
        DagAccessEntity,
        DagDetails,
    )

    method = _METHODS.get(request.method, "PUT")
    allowed = get_auth_manager().is_authorized_dag(
        method=method,  # type: ignore[arg-type]
        user=user,
        access_entity=DagAccessEntity.RUN,
        details=DagDetails(id=DAG_ID),
    )
    if not allowed:
        raise HTTPException(403, f"not allowed to {method} runs of {DAG_ID}")
    name = user.get_name()
    # who may write Airflow Variables could edit the subscriptions' Variable anyway
    variables = get_auth_manager().is_authorized_variable(method="PUT", user=user)
    return Principal(
        name=name, admin=name in settings.admin_names(), subscription_admin=bool(variables)
    )


def create_airflow_app(store: TransferStore | None = None) -> FastAPI:
    """The app the plugin mounts at ``/lclstream`` (DAG runs via Airflow's models)."""
    from airflow.configuration import conf

    from airflow_provider_lclstream.api.airflow_store import AirflowTransferStore
    from airflow_provider_lclstream.api.airflow_subscriptions import AirflowSubscriptionStore

    base = conf.get("api", "base_url", fallback="") or ""
    return build_app(
        store or AirflowTransferStore(),
        airflow_principal,
        title="LCLStream API (Airflow)",
        airflow_base_url=base or "",
        consumer_templates=settings.consumer_templates,
        subscriptions=AirflowSubscriptionStore(),
        experiment_managers=settings.experiment_managers,
        warm_pools=pool_summaries,
    )
