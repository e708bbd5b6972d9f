"""Start ``lclstream_transfer`` runs for the Elog run starts that scheduled this DAG run.

**Subscriptions** (the Airflow Variable ``lclstream_subscriptions``, written through the transfer
API) are read at every run start: each run start starts one transfer per enabled subscription that
matches it, with the subscription's template, owner (``user``) and id (``subscription``) in the
transfer's conf. **Quick start:** while no subscription exists at all, the DAG's params (the
dag-processor's ``[lclstream]`` detector, backend, output_dir) make one transfer per run start of
an experiment that ``[lclstream] experiments`` matches (empty: every experiment).

Run starts that start nothing are recorded in XCom ``unmatched`` (the API's
``/v1/subscriptions/unmatched`` counts them) and counted in the ``lclstream.run_starts.unmatched``
metric. Each transfer's run id is derived from the Kafka message and the subscription
(:func:`~airflow_provider_lclstream.config.subscriptions.run_id_for`), so a replayed message
starts nothing twice.

Airflow 3.3 leaves an asset event that arrives after the one that queued a DAG run, but before
the scheduler created that run, to the *next* DAG run (which comes only with the next run start).
So the task also takes the run starts of its inlet asset that arrived after its DAG run was
queued (:func:`late_events`); one that a later DAG run takes too starts nothing twice (run ids).

The first transfer is triggered by this task itself (no task in between: every scheduling hop
costs about half a second before the data flows). When warm pools serve it, this task first
claims its buffer, streamer and consumers (``prestart``, ``operators/prestart.py``): the run
streams while its DAG run is created, and the transfer's tasks adopt those jobs. The others
(several subscriptions, or run starts that arrived together) go to XCom ``more`` for a mapped
``TriggerDagRunOperator`` downstream, so none is dropped.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk.exceptions import AirflowSkipException

from airflow_provider_lclstream.config.subscriptions import (
    SUBSCRIPTIONS_VARIABLE,
    UNMATCHED_XCOM_KEY,
    SubscriptionBook,
    message_key,
    run_id_for,
)
from airflow_provider_lclstream.hooks import settings
from airflow_provider_lclstream.transfer.run_events import transfer_confs, watcher_payloads

if TYPE_CHECKING:
    from airflow.sdk import Context

DEFAULT_KEYS = ("detector_name", "mode", "ranks", "img_per_file", "output_dir")
MORE_XCOM_KEY = "more"
#: most run starts taken from those that arrived after this DAG run was queued
LATE_LIMIT = 100
UNMATCHED_METRIC = "lclstream.run_starts.unmatched"
MATCHED_METRIC = "lclstream.run_starts.transfers"


def current_subscriptions() -> SubscriptionBook:
    """The subscription book as it is now (read at every run start: changes apply at once)."""
    return SubscriptionBook.parse(settings._variable(SUBSCRIPTIONS_VARIABLE))


def _legacy_defaults(params: dict[str, Any]) -> dict[str, Any]:
    defaults: dict[str, Any] = {k: params[k] for k in DEFAULT_KEYS if k in params}
    for role in ("streamer", "buffer", "consumer"):
        if params.get(f"{role}_backend"):
            defaults[role] = {"backend": params[f"{role}_backend"]}
    return defaults


def plan_transfers(
    events: list[dict[str, Any]],
    book: SubscriptionBook,
    params: dict[str, Any],
    xtc_dir: str | None,
    experiments: str | None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``([{"conf", "trigger_run_id"}], unmatched run-start events)`` for these events.

    With subscriptions: one transfer per (run start, matching enabled subscription). Without
    any: the quick-start path, one transfer per run start of an experiment ``experiments``
    (a regex, whole name) matches, filled from the DAG's ``params``.
    """
    starts = unique_run_starts(events)
    planned: list[dict[str, Any]] = []
    unmatched: list[dict[str, Any]] = []
    if not book.subscriptions:
        if experiments is not None:
            try:
                re.compile(experiments)
            except re.error as err:
                raise ValueError(
                    f"[lclstream] experiments {experiments!r} is not a regular expression: {err}"
                ) from None
        wanted: list[dict[str, Any]] = []
        for event in starts:
            selected = experiments is None or re.fullmatch(experiments, str(event["experiment"]))
            (wanted if selected else unmatched).append(event)
        for conf in transfer_confs(wanted, _legacy_defaults(params), xtc_dir):
            planned.append({"conf": conf, "trigger_run_id": run_id_for(conf["event"], None)})
        return planned, unmatched
    seen: set[str] = set()
    for event in starts:
        subscriptions = book.matching(event)
        if not subscriptions:
            unmatched.append(event)
        for subscription in subscriptions:
            run_id = run_id_for(event, subscription.id)
            if run_id in seen:  # the same message twice in one DAG run
                continue
            seen.add(run_id)
            conf = {
                "request": subscription.request_for(event, xtc_dir),
                "trigger": "elog",
                "event": event,
                "subscription": subscription.id,
                "user": subscription.owner,
            }
            planned.append({"conf": conf, "trigger_run_id": run_id})
    return planned, unmatched


def unique_run_starts(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The run-start events, each message once (in order)."""
    seen: set[str] = set()
    out = []
    for event in events:
        if event.get("kind") != "run_start":
            continue
        key = message_key(event)
        if key not in seen:
            seen.add(key)
            out.append(event)
    return out


def late_events(context: Context, inlets: list[Any]) -> list[dict[str, Any]]:
    """Extras of the inlet asset's events that arrived after this DAG run was queued
    (Airflow 3.3 would leave them to the next run start's DAG run); [] when unavailable."""
    run = context.get("dag_run")
    accessors = context.get("inlet_events")
    after = getattr(run, "run_after", None)
    if not inlets or accessors is None or after is None:
        return []
    try:
        events = accessors[inlets[0]].after(after.isoformat()).ascending(True).limit(LATE_LIMIT)
        return [dict(e.extra or {}) for e in events]
    except Exception as err:  # the triggering events are still handled
        import logging

        logging.getLogger(__name__).warning("cannot read later run starts: %s", err)
        return []


def run_start_confs(
    context: Context, inlets: list[Any] | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The transfers to start for this DAG run's run-start events (and those that came after it
    was queued), and the unmatched events."""
    extras = [
        dict(event.extra)
        for events in context["triggering_asset_events"].values()
        for event in events
    ]
    extras += late_events(context, inlets or [])
    return plan_transfers(
        watcher_payloads(extras),
        current_subscriptions(),
        dict(context["params"]),
        settings.get_optional("xtc_dir"),
        settings.get_optional("experiments"),
    )


def _count(metric: str, count: int) -> None:
    if count:
        from airflow.sdk.observability.stats import Stats

        Stats.incr(metric, count=count)


class StartRunTransfersOperator(TriggerDagRunOperator):
    """Trigger ``trigger_dag_id`` (default ``lclstream_transfer``) for the first planned
    transfer; push the others to XCom ``more`` and unmatched run starts to XCom ``unmatched``.
    Skips when no transfer is to start. A transfer whose run id exists already (a replayed
    message) is skipped, not started again.

    ``prestart`` (and ``[lclstream] prestart``): claim the first transfer's warm jobs before
    triggering it (XCom ``prestart``; ``operators/prestart.py``). ``top_up``: then submit the
    pools' new standby jobs in this task; off, a task after it does (about a second per job on
    a loaded SLURM: off the run's path)."""

    def __init__(
        self,
        *,
        trigger_dag_id: str = "lclstream_transfer",
        prestart: bool = True,
        top_up: bool = True,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("skip_when_already_exists", True)
        super().__init__(trigger_dag_id=trigger_dag_id, **kwargs)
        self.prestart = prestart
        self.top_up = top_up

    def _prestart(self, context: Context, run_id: str, conf: dict[str, Any]) -> dict[str, Any]:
        """The first transfer's conf after claiming its warm jobs (``operators/prestart.py``),
        or ``conf`` unchanged: no warm buffer, its DAG run exists (a replayed message), or any
        error (the transfer's own tasks then start its jobs, as without prestart)."""
        from airflow_provider_lclstream.operators.prestart import (
            PRESTART_CONF_KEY,
            prestart_transfer,
        )

        ti = context["ti"]
        try:
            if ti.get_dr_count(dag_id=self.trigger_dag_id, run_ids=[run_id]):
                self.log.info("no prestart: transfer %s exists already", run_id)
                return conf
            started = prestart_transfer(
                conf, run_id, dag_id=self.trigger_dag_id, task_log=self.log, top_up=self.top_up
            )
        except Exception as err:
            self.log.warning("no prestart (%s: %s)", type(err).__name__, err)
            return conf
        if started is None:
            return conf
        ti.xcom_push(key=PRESTART_CONF_KEY, value=started[PRESTART_CONF_KEY])
        return started

    def execute(self, context: Context) -> None:
        planned, unmatched = run_start_confs(context, list(self.inlets))
        ti = context["ti"]
        ti.xcom_push(key=MORE_XCOM_KEY, value=planned[1:])
        if unmatched:
            ti.xcom_push(key=UNMATCHED_XCOM_KEY, value=unmatched)
            for event in unmatched:
                self.log.warning(
                    "run start of %s run %s matched no subscription (counted as unmatched)",
                    event.get("experiment"),
                    event.get("run"),
                )
        _count(UNMATCHED_METRIC, len(unmatched))
        _count(MATCHED_METRIC, len(planned))
        if not planned:
            raise AirflowSkipException(
                f"no transfer to start: {len(unmatched)} run start(s) matched no subscription"
            )
        first = planned[0]
        conf = first["conf"]
        self.log.info(
            "starting transfer %s of %s run %s%s",
            first["trigger_run_id"],
            conf["event"]["experiment"],
            conf["event"]["run"],
            f" for subscription {conf['subscription']}" if "subscription" in conf else "",
        )
        if len(planned) > 1:
            self.log.info("%d more transfers: see start_more_transfers", len(planned) - 1)
        if self.prestart and settings.get_bool("prestart"):
            conf = self._prestart(context, first["trigger_run_id"], conf)
        self.conf = conf
        self.trigger_run_id = first["trigger_run_id"]
        super().execute(context)
