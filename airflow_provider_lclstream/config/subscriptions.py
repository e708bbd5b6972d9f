"""Subscriptions: which Elog run starts start a transfer, and with what request.

A subscription has an owner, a **match** (one experiment, or an instrument with an optional
pattern of experiment names; optionally run types and run parameters) and a **template**: the
fields of a :class:`~airflow_provider_lclstream.config.transfer.TransferRequest` except the data
source, which the run-start event gives (``exp``, ``run``). Each run start starts one transfer per
enabled subscription that matches it, tagged with the subscription's id.

The subscriptions live in one Airflow Variable (:data:`SUBSCRIPTIONS_VARIABLE`, a JSON
:class:`SubscriptionBook`) written by the transfer API, which also appends every change to
:data:`AUDIT_VARIABLE`; the run-start task reads the book at every run start, so a change applies
to the next run start without a re-parse or a restart. Pure models and rules: no Airflow here.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from airflow_provider_lclstream.config.consumers import ConsumerTemplateError, ConsumerTemplates
from airflow_provider_lclstream.config.transfer import EXPERIMENT, TransferRequest

#: Airflow Variable holding the :class:`SubscriptionBook` (JSON); edit it through the API only
SUBSCRIPTIONS_VARIABLE = "lclstream_subscriptions"
#: Airflow Variable holding the audit log (a JSON list of :class:`AuditEntry`)
AUDIT_VARIABLE = "lclstream_subscriptions_audit"
#: The DAG that turns run starts into transfers, its first task, and the XCom key under which
#: that task records the run starts no subscription matched (the API counts them from there)
RUN_START_DAG_ID = "lclstream_on_run_start"
RUN_START_TASK_ID = "start_transfer"
UNMATCHED_XCOM_KEY = "unmatched"
#: the fields of a run-start event that make the Kafka message itself
MESSAGE_FIELDS = ("topic", "partition", "offset", "experiment", "run", "time")
#: TransferRequest fields a template may not set: the run-start event gives the data source
EVENT_FIELDS = ("exp", "run", "files", "synthetic", "config")
INSTRUMENT = re.compile(r"[a-z]{3}")
SUBSCRIPTION_ID = re.compile(r"sub[0-9]{1,9}")
Action = Literal["create", "update", "enable", "disable", "delete"]


class SubscriptionMatch(BaseModel):
    """Which run starts: ``experiment``, or ``instrument`` (+ ``pattern``); optionally
    ``run_types`` (any of) and ``params`` (each run parameter equal)."""

    model_config = ConfigDict(extra="forbid")

    experiment: str | None = Field(default=None, description="one experiment, e.g. mfxl1023")
    instrument: str | None = Field(
        default=None, description="an instrument (the experiment's first 3 letters), e.g. mfx"
    )
    pattern: str | None = Field(
        default=None, description="regex the whole experiment name must match (with instrument)"
    )
    run_types: list[str] = Field(default_factory=list, description="e.g. [DATA]; empty: any")
    params: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="run parameters that must be equal"
    )

    @field_validator("experiment")
    @classmethod
    def _experiment(cls, value: str | None) -> str | None:
        if value is not None and not EXPERIMENT.fullmatch(value):
            raise ValueError(f"{value!r} is not an experiment name (e.g. mfxl1023)")
        return value

    @field_validator("instrument")
    @classmethod
    def _instrument(cls, value: str | None) -> str | None:
        if value is not None and not INSTRUMENT.fullmatch(value):
            raise ValueError(f"{value!r} is not an instrument (three lower-case letters, e.g. mfx)")
        return value

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as err:
                raise ValueError(f"not a regular expression: {err}") from None
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> SubscriptionMatch:
        if (self.experiment is None) == (self.instrument is None):
            raise ValueError("give experiment, or instrument (with an optional pattern)")
        if self.pattern is not None and self.instrument is None:
            raise ValueError("pattern needs instrument (an experiment matches itself)")
        return self

    def matches(self, event: dict[str, Any]) -> bool:
        """Whether the Elog event (``experiment``, ``run_type``, ``params``) is selected."""
        exp = str(event.get("experiment") or "")
        if self.experiment is not None and exp != self.experiment:
            return False
        if self.instrument is not None:
            if not exp.startswith(self.instrument):
                return False
            if self.pattern is not None and not re.fullmatch(self.pattern, exp):
                return False
        if self.run_types and event.get("run_type") not in self.run_types:
            return False
        params = event.get("params") or {}
        return all(k in params and str(params[k]) == str(v) for k, v in self.params.items())

    def example_experiment(self) -> str:
        """An experiment name this match could select (to validate a template with)."""
        return self.experiment or f"{self.instrument}x00000"

    def may_overlap(self, other: SubscriptionMatch) -> bool:
        """Whether some run start could match both (decided on experiments and run types)."""
        if self.run_types and other.run_types and not set(self.run_types) & set(other.run_types):
            return False
        if self.experiment and other.experiment:
            return self.experiment == other.experiment
        if self.instrument and other.instrument:
            return self.instrument == other.instrument
        exp, wide = (self, other) if self.experiment else (other, self)
        experiment = str(exp.experiment)
        return experiment.startswith(str(wide.instrument)) and (
            wide.pattern is None or re.fullmatch(wide.pattern, experiment) is not None
        )


class SubscriptionSpec(BaseModel):
    """What a client sends to create a subscription (``owner``: admins only, default you)."""

    model_config = ConfigDict(extra="forbid")

    match: SubscriptionMatch
    template: dict[str, Any] = Field(
        description="TransferRequest fields (detector_name, mode, consumer_template, "
        "consumer_params, streamer/buffer/consumer backends, ...) without exp/run"
    )
    enabled: bool = True
    description: str = Field(default="", max_length=500)
    owner: str | None = None


class SubscriptionPatch(BaseModel):
    """A partial update: the fields given replace the stored ones (``template`` as a whole)."""

    model_config = ConfigDict(extra="forbid")

    match: SubscriptionMatch | None = None
    template: dict[str, Any] | None = None
    enabled: bool | None = None
    description: str | None = Field(default=None, max_length=500)


class Subscription(BaseModel):
    """A stored subscription."""

    id: str
    owner: str
    match: SubscriptionMatch
    template: dict[str, Any]
    enabled: bool = True
    description: str = ""
    created: datetime
    created_by: str
    updated: datetime
    updated_by: str

    def consumer(self) -> str:
        """A short name of what consumes this subscription's data."""
        name = self.template.get("consumer_template")
        if name is None:
            return "addr" if self.template.get("addr") else "lclstream-receive"
        params = json.dumps(self.template.get("consumer_params") or {}, sort_keys=True)
        return f"{name} {params}"

    def detector(self) -> str:
        return str(self.template.get("detector_name") or TransferRequest().detector_name)

    def request_for(self, event: dict[str, Any], xtc_dir: str | None) -> dict[str, Any]:
        """The transfer request for one run start: the template plus the event's run."""
        request = {**self.template, "exp": str(event["experiment"]), "run": int(event["run"])}
        if xtc_dir and "xtc_dir" not in request:
            request["xtc_dir"] = xtc_dir
        return request


class SubscriptionBook(BaseModel):
    """Every subscription (the JSON of :data:`SUBSCRIPTIONS_VARIABLE`)."""

    next_id: int = 1
    subscriptions: list[Subscription] = Field(default_factory=list)

    @classmethod
    def parse(cls, text: str | None) -> SubscriptionBook:
        """The book from the Variable's text; none (or empty) is an empty book."""
        if text is None or not text.strip():
            return cls()
        try:
            return cls.model_validate_json(text)
        except ValidationError as err:
            raise ValueError(
                f"Variable {SUBSCRIPTIONS_VARIABLE} is not a subscription book ({err.error_count()}"
                f" errors, first: {err.errors()[0]['msg']}); fix or delete it"
            ) from None

    def get(self, subscription_id: str) -> Subscription | None:
        return next((s for s in self.subscriptions if s.id == subscription_id), None)

    def matching(self, event: dict[str, Any]) -> list[Subscription]:
        """The enabled subscriptions that select this run start, in id order."""
        return [s for s in self.subscriptions if s.enabled and s.match.matches(event)]


class AuditEntry(BaseModel):
    """One change: who, when, what (``diff``: dotted field -> ``[old, new]``)."""

    seq: int
    at: datetime
    who: str
    action: Action
    subscription: str
    owner: str
    diff: dict[str, list[Any]] = Field(default_factory=dict)


def parse_audit(text: str | None) -> list[AuditEntry]:
    if text is None or not text.strip():
        return []
    return [AuditEntry.model_validate(e) for e in json.loads(text)]


def diff(
    old: dict[str, Any] | None, new: dict[str, Any] | None, prefix: str = ""
) -> dict[str, list[Any]]:
    """Changed leaves between two JSON documents: ``{"template.detector_name": [old, new]}``."""
    out: dict[str, list[Any]] = {}
    old, new = old or {}, new or {}
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key), new.get(key)
        path = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out.update(diff(a, b, path + "."))
        elif isinstance(a, dict) and b is None:
            out.update(diff(a, {}, path + ".") or {path: [a, None]})
        elif a is None and isinstance(b, dict):
            out.update(diff({}, b, path + ".") or {path: [None, b]})
        elif a != b:
            out[path] = [a, b]
    return out


def audit_view(subscription: Subscription | None) -> dict[str, Any] | None:
    """The fields an audit diff compares (not the bookkeeping of who/when)."""
    if subscription is None:
        return None
    return subscription.model_dump(
        mode="json", include={"owner", "match", "template", "enabled", "description"}
    )


def check_template(
    template: dict[str, Any], match: SubscriptionMatch, templates: ConsumerTemplates
) -> list[tuple[str, str]]:
    """Problems of a template as ``(field, message)`` (fields under ``template.``); [] if fine.

    The template is validated as the request a run start of ``match`` would make, and its
    consumer template is rendered with its parameters.
    """
    problems = [
        (f"template.{k}", "comes from the run-start event; remove it from the template")
        for k in EVENT_FIELDS
        if k in template
    ]
    if template.get("consumer_command"):
        problems.append(
            (
                "template.consumer_command",
                "a raw shell command cannot run from a run start; choose a consumer_template",
            )
        )
    if problems:
        return problems
    try:
        request = TransferRequest.model_validate(
            {**template, "exp": match.example_experiment(), "run": 0}
        )
    except ValidationError as err:
        for e in err.errors(include_input=False, include_url=False):
            loc = ".".join(str(p) for p in e["loc"])
            ctx = e.get("ctx") or {}
            message = str(ctx["error"]) if "error" in ctx else e["msg"]
            problems.append((f"template.{loc}" if loc else "template", message))
        return problems
    if request.consumer_template is not None:
        try:
            templates.command_line(request.consumer_template, dict(request.consumer_params))
        except ConsumerTemplateError as err:
            problems.append(("template.consumer_template", str(err)))
    elif request.consumer_params:
        problems.append(("template.consumer_params", "given without a consumer_template"))
    return problems


def overlaps(subscription: Subscription, book: SubscriptionBook) -> list[str]:
    """Warnings: other enabled subscriptions of the same owner, detector and consumer that a
    run start could match together with this one (each would start its own transfer)."""
    warnings = []
    for other in book.subscriptions:
        if other.id == subscription.id or other.owner != subscription.owner:
            continue
        if not (other.enabled and subscription.enabled):
            continue
        if (other.detector(), other.consumer()) != (
            subscription.detector(),
            subscription.consumer(),
        ):
            continue
        if subscription.match.may_overlap(other.match):
            warnings.append(
                f"overlaps {other.id} (same owner {other.owner}, detector {other.detector()}, "
                f"consumer {other.consumer()}): a run start matching both starts two transfers"
            )
    return warnings


def manage_refusal(
    name: str, admin: bool, match: SubscriptionMatch, managers: dict[str, str]
) -> str | None:
    """Why ``name`` may not manage a subscription with ``match`` (None: allowed).

    Admins manage every subscription. Others manage subscriptions of single experiments that
    their entry of ``[lclstream] experiment_managers`` (user -> regex) fully matches;
    instrument-wide subscriptions are for admins.
    """
    if admin:
        return None
    if match.experiment is None:
        return "instrument-wide subscriptions (instrument/pattern) are for admins"
    allowed = managers.get(name)
    if allowed is None or not re.fullmatch(allowed, match.experiment):
        return (
            f"{name} may not manage experiment {match.experiment} (ask an admin to add it to "
            "your entry of [lclstream] experiment_managers)"
        )
    return None


def message_key(event: dict[str, Any]) -> str:
    """What makes a run-start message itself: a replay of it has the same key."""
    return json.dumps([event.get(k) for k in MESSAGE_FIELDS], default=str)


def run_id_for(event: dict[str, Any], subscription_id: str | None) -> str:
    """The transfer's DAG-run id for one run-start message (and subscription).

    Derived from the Kafka message (topic, partition, offset) and the run, so a replayed message
    gives the same id and no second transfer; a new message of the same run gets a new one.
    """
    key = json.dumps([subscription_id, message_key(event)])
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    prefix = subscription_id or "elog"
    return f"{prefix}__{event['experiment']}-r{int(event['run']):04d}__{digest}"


def now() -> datetime:
    return datetime.now(UTC)
