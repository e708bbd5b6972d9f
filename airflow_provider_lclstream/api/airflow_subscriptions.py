"""``SubscriptionStore`` over Airflow Variables (the API server, or ``lclstream-api`` configured
with the same metadata database), so the run-start task reads them through the task SDK.

The book is the Variable ``lclstream_subscriptions``; a change is a compare-and-swap on the
Variable's stored text in the same transaction that appends to ``lclstream_subscriptions_audit``,
retried when another writer changed the book in between, so concurrent API calls never lose a
change. Unmatched run starts are read from the XComs the run-start task leaves
(``lclstream_on_run_start``/``start_transfer``/``unmatched``).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from airflow_provider_lclstream.api.subscriptions import UnmatchedRunStarts
from airflow_provider_lclstream.config.subscriptions import (
    AUDIT_VARIABLE,
    RUN_START_DAG_ID,
    RUN_START_TASK_ID,
    SUBSCRIPTIONS_VARIABLE,
    UNMATCHED_XCOM_KEY,
    AuditEntry,
    SubscriptionBook,
    message_key,
    parse_audit,
)
from airflow_provider_lclstream.exceptions import LCLStreamError

if TYPE_CHECKING:
    import builtins

    from sqlalchemy.orm import Session

    from airflow_provider_lclstream.api.subscriptions import Change

log = logging.getLogger(__name__)
MAX_TRIES = 20
SCAN_LIMIT = 5000  # newest run-start task XComs looked at for unmatched run starts


class ConcurrentChange(LCLStreamError, RuntimeError):
    """Other writers kept changing the subscriptions; try again."""


def _variable(session: Session, key: str) -> Any:
    from airflow.models.variable import Variable
    from sqlalchemy import select

    return session.scalar(select(Variable).where(Variable.key == key))


def _write(session: Session, key: str, text: str, expected: str | None, exists: bool) -> bool:
    """Store ``text`` if the stored (raw) value is still ``expected``; False if it is not."""
    from airflow.models.variable import Variable
    from sqlalchemy import update

    new = Variable(key=key, val=text)
    if not exists:
        session.add(new)
        session.flush()  # a concurrent insert fails here on the unique key
        return True
    result: Any = session.execute(
        update(Variable)
        .where(Variable.key == key, Variable._val == expected)
        .values(_val=new._val, is_encrypted=new.is_encrypted)
    )
    return bool(result.rowcount == 1)


class AirflowSubscriptionStore:
    """Subscriptions in the Airflow Variables :data:`SUBSCRIPTIONS_VARIABLE` and its audit."""

    def read(self) -> SubscriptionBook:
        from airflow.utils.session import create_session

        with create_session() as session:
            var = _variable(session, SUBSCRIPTIONS_VARIABLE)
            return SubscriptionBook.parse(var.val if var is not None else None)

    def change(self, apply: Change) -> Any:
        from airflow.utils.session import create_session
        from sqlalchemy.exc import IntegrityError

        for _ in range(MAX_TRIES):
            try:
                with create_session() as session:
                    var = _variable(session, SUBSCRIPTIONS_VARIABLE)
                    raw = var._val if var is not None else None
                    book, entry, result = apply(
                        SubscriptionBook.parse(var.val if var is not None else None)
                    )
                    text = book.model_dump_json()
                    if not _write(session, SUBSCRIPTIONS_VARIABLE, text, raw, var is not None):
                        session.rollback()
                        continue
                    audit_var = _variable(session, AUDIT_VARIABLE)
                    entries = parse_audit(audit_var.val if audit_var is not None else None)
                    entry = entry.model_copy(update={"seq": len(entries) + 1})
                    entries.append(entry)
                    audit_text = json.dumps([e.model_dump(mode="json") for e in entries])
                    if audit_var is None:
                        _write(session, AUDIT_VARIABLE, audit_text, None, False)
                    else:
                        audit_var.val = audit_text
                    session.flush()
            except IntegrityError:  # two writers created the Variable at once
                continue
            log.info(
                "subscription %s %s by %s: %s",
                entry.subscription,
                entry.action,
                entry.who,
                sorted(entry.diff),
            )
            return result
        raise ConcurrentChange(f"{SUBSCRIPTIONS_VARIABLE} changed {MAX_TRIES} times meanwhile")

    def audit(self) -> builtins.list[AuditEntry]:
        from airflow.utils.session import create_session

        with create_session() as session:
            var = _variable(session, AUDIT_VARIABLE)
            return parse_audit(var.val if var is not None else None)

    def unmatched(self, limit: int = 50) -> UnmatchedRunStarts:
        from airflow.models.xcom import XComModel
        from airflow.utils.session import create_session
        from sqlalchemy import select

        events: builtins.list[dict[str, Any]] = []
        seen: set[str] = set()
        with create_session() as session:
            rows = session.scalars(
                select(XComModel)
                .where(
                    XComModel.dag_id == RUN_START_DAG_ID,
                    XComModel.task_id == RUN_START_TASK_ID,
                    XComModel.key == UNMATCHED_XCOM_KEY,
                )
                .order_by(XComModel.timestamp.desc())
                .limit(SCAN_LIMIT)
            ).all()
            for row in rows:
                value = XComModel.deserialize_value(row)
                for event in value if isinstance(value, list) else []:
                    # a run start that two DAG runs both took (late events) is counted once
                    if isinstance(event, dict) and message_key(event) not in seen:
                        seen.add(message_key(event))
                        events.append({**event, "dag_run_id": row.run_id})
        return UnmatchedRunStarts(count=len(events), data=events[:limit])
