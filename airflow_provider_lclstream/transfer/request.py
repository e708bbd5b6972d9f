"""Turn a DAG run's conf and params into a validated TransferRequest (one place for both DAGs)."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from airflow_provider_lclstream.config.consumers import (
    ConsumerTemplateError,
    ConsumerTemplates,
    check_raw_command,
)
from airflow_provider_lclstream.config.transfer import TransferRequest
from airflow_provider_lclstream.exceptions import LCLStreamError

# Params of the manual-trigger form that map 1:1 onto TransferRequest fields.
FORM_FIELDS = (
    "exp", "run", "detector_name", "mode", "access_mode", "events", "img_per_file",
    "compression", "library", "ranks", "buffers", "consumers", "consumer_command",
    "consumer_template", "consumer_params", "output_dir", "buffer_host", "addr",
)  # fmt: skip
BACKEND_PARAMS = {
    "streamer": "streamer_backend",
    "buffer": "buffer_backend",
    "consumer": "consumer_backend",
}


class InvalidTransferRequest(LCLStreamError, ValueError):
    """A transfer request failed validation; the message names every bad field."""


def backend_choices(params: dict[str, Any]) -> dict[str, Any]:
    """``{"streamer": {"backend": ...}, ...}`` from the form's backend params."""
    return {
        role: {"backend": params[param], "conn_id": params.get(f"{param}_conn_id")}
        for role, param in BACKEND_PARAMS.items()
        if params.get(param)
    }


def request_from(
    conf: dict[str, Any] | None,
    params: dict[str, Any],
    xtc_dir: str | None = None,
    *,
    templates: ConsumerTemplates | None = None,
    admin: bool = False,
    caller: str | None = None,
) -> dict[str, Any]:
    """``conf["request"]`` (API), ``conf["config"]`` (a streamer config), or the form's params.

    ``xtc_dir`` (the DAG passes ``[lclstream] xtc_dir``) is psana's ``dir=`` for a run from
    ``lclstream-arp-launch``.

    A ``consumer_template`` is rendered from ``templates`` into the request's
    ``consumer_command``; a raw ``consumer_command`` is refused unless ``admin`` (``caller``
    names who asked, in the error).

    The buffer's ports are chosen here when the request names none (its host is learned from
    its job once it runs).
    """
    conf = dict(conf or {})
    if "request" in conf:
        data = dict(conf["request"])
    elif "experiment" in conf:  # lclstream-arp-launch: the run from the ARP, the rest from params
        data = {k: params[k] for k in FORM_FIELDS if params.get(k) not in (None, "")}
        data.update({k: conf[k] for k in FORM_FIELDS if k in conf})  # e.g. --conf of the ARP
        data.update(exp=conf["experiment"], run=conf["run"])
        if xtc_dir:
            data["xtc_dir"] = xtc_dir
        data.update(backend_choices(params))
    elif "config" in conf:
        extra = {k: v for k, v in conf.items() if k not in ("config", "user")}
        data = {"config": conf["config"], **extra}
    else:
        data = {k: params[k] for k in FORM_FIELDS if params.get(k) not in (None, "")}
        if params.get("source") == "synthetic" or (not data.get("exp") and not params.get("files")):
            data.pop("exp", None)
            data.pop("run", None)
            data["synthetic"] = True
        elif params.get("source") == "files" or params.get("files"):
            data.pop("exp", None)
            data.pop("run", None)
            data["files"] = [f for f in str(params.get("files", "")).split(",") if f]
        data.update(backend_choices(params))
    try:
        request = TransferRequest.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'request'}: {e['msg']}" for e in err.errors()
        )
        raise InvalidTransferRequest(f"invalid transfer request: {problems}") from None
    request = with_consumer(request, templates, admin=admin, caller=caller)
    from airflow_provider_lclstream.transfer.jobs import with_buffer_ports

    return with_buffer_ports(request).model_dump(mode="json")


def with_consumer(
    request: TransferRequest,
    templates: ConsumerTemplates | None,
    *,
    admin: bool,
    caller: str | None = None,
) -> TransferRequest:
    """The request with its consumer template rendered into ``consumer_command``.

    Raw commands pass only for admins; a template and a raw command together are refused.
    """
    try:
        check_raw_command(request.consumer_command, admin=admin, who=caller)
    except PermissionError as err:
        raise InvalidTransferRequest(str(err)) from None
    if request.consumer_template is None:
        if request.consumer_params:
            raise InvalidTransferRequest("consumer_params given without a consumer_template")
        return request
    if request.consumer_command:
        raise InvalidTransferRequest("give consumer_template or consumer_command, not both")
    try:
        line = (templates or ConsumerTemplates()).command_line(
            request.consumer_template, dict(request.consumer_params)
        )
    except ConsumerTemplateError as err:
        raise InvalidTransferRequest(str(err)) from None
    return request.model_copy(update={"consumer_command": line})
