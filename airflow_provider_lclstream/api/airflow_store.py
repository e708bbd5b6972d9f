"""``TransferStore`` over Airflow's own models and session (inside the API server, or any
process configured with the Airflow metadata database).

Cancelling marks the DAG run failed exactly as Airflow's ``PATCH dagRuns/{id} state=failed``
does: running work tasks fail (their processes are killed, so ``on_kill`` runs), pending ones are
skipped, and the teardown ``stop_jobs`` is left for the scheduler to run (Airflow 3.3 keeps the
run open while a teardown is pending). The run gets the note ``canceled by <user>``; the API
reports ``canceling`` until the run has ended, then ``canceled``.
"""

from __future__ import annotations

import builtins
import logging
import secrets
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow_provider_lclstream.api.models import DAG_ID, TransferState
from airflow_provider_lclstream.api.store import (
    CANCEL_NOTE,
    RUN_STREAMER,
    START_BUFFER,
    WATCH_TRANSFER,
    TransferFinished,
    TransferNotFound,
    TransferRecord,
    transport_of,
)
from airflow_provider_lclstream.transfer.report import ACCOUNTING_XCOM_KEY

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from airflow_provider_lclstream.api.models import Submission

log = logging.getLogger(__name__)
SCAN_LIMIT = 2000  # newest DAG runs looked at when filtering lists by user/state


def new_run_id(now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return f"lcls_{now:%Y%m%dT%H%M%S}_{secrets.token_hex(4)}"


class AirflowTransferStore:
    """Transfers as DAG runs of ``dag_id`` in the Airflow metadata database."""

    def __init__(self, dag_id: str = DAG_ID) -> None:
        self.dag_id = dag_id

    # ------------------------------------------------------------------ create

    def create(self, submission: Submission, user: str) -> TransferRecord:
        from airflow.api.common.trigger_dag import trigger_dag
        from airflow.utils.session import create_session
        from airflow.utils.types import DagRunTriggeredByType

        run_id = new_run_id()
        with create_session() as session:
            run = trigger_dag(
                self.dag_id,
                triggered_by=DagRunTriggeredByType.REST_API,
                triggering_user_name=user,
                run_id=run_id,
                conf=submission.conf(user),
                session=session,
            )
            if run is None:  # pragma: no cover - trigger_dag raises instead
                raise RuntimeError(f"Airflow did not create a run of {self.dag_id}")
            session.flush()
            record = self._records(session, [run])[0]
        log.info("transfer %s created by %s (%s)", run_id, user, submission.kind)
        return record

    # ------------------------------------------------------------------ read

    def list(
        self, *, user: str | None = None, state: TransferState | None = None, limit: int = 100
    ) -> builtins.list[TransferRecord]:
        from airflow.models.dagrun import DagRun
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:
            runs = session.scalars(
                select(DagRun)
                .where(DagRun.dag_id == self.dag_id)
                .order_by(DagRun.run_after.desc(), DagRun.id.desc())
                .limit(SCAN_LIMIT)
            ).all()
            if user is not None:
                runs = [r for r in runs if (r.conf or {}).get("user") == user]
            if state is None:
                runs = runs[:limit]
            records = self._records(session, builtins.list(runs))
        if state is not None:
            records = [r for r in records if r.state == state][:limit]
        return records

    def get(self, transfer_id: str) -> TransferRecord:
        from airflow.utils.session import create_session

        with create_session() as session:
            return self._records(session, [self._run(session, transfer_id)])[0]

    # ------------------------------------------------------------------ cancel

    def cancel(self, transfer_id: str, by: str) -> TransferRecord:
        from airflow.api_fastapi.core_api.datamodels.dag_run import DagRunMutableStates
        from airflow.api_fastapi.core_api.services.public.dag_run import patch_dag_run_state
        from airflow.models.dagbag import DBDagBag
        from airflow.utils.session import create_session

        with create_session() as session:
            run = self._run(session, transfer_id)
            if run.state not in ("queued", "running"):
                raise TransferFinished(f"transfer {transfer_id} already ended ({run.state})")
            note = f"{CANCEL_NOTE}{by} via the LCLStream API"
            if run.dag_run_note is None:
                run.note = (note, by)
            else:
                run.dag_run_note.content = note
            dag = DBDagBag().get_dag_for_run(run, session=session)
            if dag is None:
                raise RuntimeError(f"the DAG of transfer {transfer_id} is not in the database")
            # what Airflow's PATCH .../dagRuns/{id} {"state": "failed"} does: running tasks fail
            # (and are killed), pending ones are skipped, teardowns are left to run
            patch_dag_run_state(
                dag=dag, dag_run=run, state=DagRunMutableStates.FAILED, session=session
            )
            session.flush()
            record = self._records(session, [run])[0]
        log.info("transfer %s canceled by %s", transfer_id, by)
        return record

    # ------------------------------------------------------------------ helpers

    def _run(self, session: Session, transfer_id: str) -> Any:
        from airflow.models.dagrun import DagRun
        from sqlalchemy import select

        run = session.scalar(
            select(DagRun).where(DagRun.dag_id == self.dag_id, DagRun.run_id == transfer_id)
        )
        if run is None:
            raise TransferNotFound(transfer_id)
        return run

    def _records(self, session: Session, runs: builtins.list[Any]) -> builtins.list[TransferRecord]:
        """Records for ``runs`` with their task states and XComs (two queries in all).

        ``final`` is ``watch_transfer``'s result, or, for a transfer whose buffer died while the
        streamer ran, ``run_streamer``'s accounting (events produced, delivered, missing)."""
        from airflow.models.taskinstance import TaskInstance
        from airflow.models.xcom import XComModel
        from sqlalchemy import select

        if not runs:
            return []
        run_ids = [r.run_id for r in runs]
        tasks: dict[str, dict[str, str | None]] = {rid: {} for rid in run_ids}
        for run_id, task_id, state in session.execute(
            select(TaskInstance.run_id, TaskInstance.task_id, TaskInstance.state).where(
                TaskInstance.dag_id == self.dag_id, TaskInstance.run_id.in_(run_ids)
            )
        ):
            tasks[run_id][task_id] = str(state) if state is not None else None
        xcoms: dict[tuple[str, str, str], Any] = {}
        for row in session.scalars(
            select(XComModel).where(
                XComModel.dag_id == self.dag_id,
                XComModel.run_id.in_(run_ids),
                XComModel.task_id.in_([START_BUFFER, WATCH_TRANSFER, RUN_STREAMER]),
                XComModel.key.in_(["return_value", ACCOUNTING_XCOM_KEY]),
                XComModel.map_index == -1,
            )
        ):
            xcoms[(row.run_id, row.task_id, row.key)] = XComModel.deserialize_value(row)
        out: builtins.list[TransferRecord] = []
        for run in runs:
            conf = run.conf or {}
            buffer = xcoms.get((run.run_id, START_BUFFER, "return_value"))
            final = xcoms.get((run.run_id, WATCH_TRANSFER, "return_value"))
            if not isinstance(final, dict):
                final = xcoms.get((run.run_id, RUN_STREAMER, ACCOUNTING_XCOM_KEY))
            kind = "config" if "config" in conf else "request"
            out.append(
                TransferRecord(
                    id=run.run_id,
                    user=str(conf.get("user") or run.triggering_user_name or ""),
                    created=run.run_after or run.queued_at,
                    dag_run_state=str(run.state),
                    tasks=tasks[run.run_id],
                    buffer=buffer if isinstance(buffer, dict) else None,
                    final=final if isinstance(final, dict) else None,
                    note=run.note,
                    kind=kind,
                    label=_label(conf),
                    batch_size=_batch_size(conf),
                    transport=transport_of(conf),
                    subscription=_subscription(conf),
                )
            )
        return out


def _label(conf: dict[str, Any]) -> str:
    request = conf.get("request")
    if isinstance(request, dict):
        if request.get("exp"):
            return f"{request['exp']}-r{int(request.get('run') or 0):04d}"
        return "synthetic" if request.get("synthetic") else "files"
    return "config"


def _subscription(conf: dict[str, Any]) -> str | None:
    value = conf.get("subscription")
    return str(value) if value else None


def _batch_size(conf: dict[str, Any]) -> int | None:
    request = conf.get("request")
    if isinstance(request, dict):
        return int(request.get("img_per_file", 10))
    pipeline = (conf.get("config") or {}).get("processing_pipeline") or {}
    size = pipeline.get("batch_size") if isinstance(pipeline, dict) else None
    return size if isinstance(size, int) else None
