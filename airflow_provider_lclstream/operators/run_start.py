"""Start one ``lclstream_transfer`` run per Elog run start that scheduled this DAG run.

The first transfer is triggered by this task itself (no task in between: every scheduling hop
costs about half a second before the data flows). Run starts that arrived together with it
(rare: the asset events of one scheduler loop share a DAG run) go to XCom ``more`` for a
mapped ``TriggerDagRunOperator`` downstream, so none is dropped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk.exceptions import AirflowSkipException

from airflow_provider_lclstream.hooks import settings
from airflow_provider_lclstream.transfer.run_events import transfer_confs, watcher_payloads

if TYPE_CHECKING:
    from airflow.sdk import Context

DEFAULT_KEYS = ("detector_name", "mode", "ranks", "img_per_file", "output_dir")
MORE_XCOM_KEY = "more"


def run_start_confs(context: Context) -> list[dict[str, Any]]:
    """One transfer conf per run-start event of this DAG run, filled from the DAG's params
    (psana's ``dir=`` from ``[lclstream] xtc_dir``)."""
    params = dict(context["params"])
    defaults: dict[str, Any] = {k: params[k] for k in DEFAULT_KEYS if k in params}
    for role in ("streamer", "buffer", "consumer"):
        if params.get(f"{role}_backend"):
            defaults[role] = {"backend": params[f"{role}_backend"]}
    extras = [
        dict(event.extra)
        for events in context["triggering_asset_events"].values()
        for event in events
    ]
    return transfer_confs(watcher_payloads(extras), defaults, settings.get_optional("xtc_dir"))


class StartRunTransfersOperator(TriggerDagRunOperator):
    """Trigger ``trigger_dag_id`` (default ``lclstream_transfer``) for the first run start;
    push the confs of any others to XCom ``more``. Skips when no run start came with the run."""

    def __init__(self, *, trigger_dag_id: str = "lclstream_transfer", **kwargs: Any) -> None:
        super().__init__(trigger_dag_id=trigger_dag_id, **kwargs)

    def execute(self, context: Context) -> None:
        confs = run_start_confs(context)
        context["ti"].xcom_push(key=MORE_XCOM_KEY, value=confs[1:])
        if not confs:
            raise AirflowSkipException("no run-start event of a watched experiment in this run")
        run = confs[0]["event"]
        self.log.info("starting a transfer of %s run %s", run["experiment"], run["run"])
        if len(confs) > 1:
            self.log.info(
                "%d more run starts came together: see start_more_transfers", len(confs) - 1
            )
        self.conf = confs[0]
        super().execute(context)
