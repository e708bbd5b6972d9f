"""Where subscriptions live (``SubscriptionStore``) and the rules of changing them.

The API changes subscriptions only through :func:`create`, :func:`update` and :func:`delete`:
each checks who may do it, validates the template (errors name the field), writes the book and
its audit entry in one atomic step of the store, and warns about overlaps.
``AirflowSubscriptionStore`` (:mod:`.airflow_subscriptions`) keeps them in Airflow Variables;
:class:`MemorySubscriptionStore` is for tests and API development.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, Field

from airflow_provider_lclstream.api.models import SubmissionError, check_user
from airflow_provider_lclstream.config.subscriptions import (
    AuditEntry,
    Subscription,
    SubscriptionBook,
    SubscriptionPatch,
    SubscriptionSpec,
    audit_view,
    check_template,
    diff,
    manage_refusal,
    now,
    overlaps,
)
from airflow_provider_lclstream.exceptions import LCLStreamError

if TYPE_CHECKING:
    import builtins
    from collections.abc import Callable

    from airflow_provider_lclstream.config.consumers import ConsumerTemplates

    #: a change: the book -> (the new book, its audit entry without seq, a result)
    Change = Callable[[SubscriptionBook], tuple[SubscriptionBook, AuditEntry, Any]]


class SubscriptionNotFound(LCLStreamError, LookupError):
    """No subscription with this id (or not the caller's)."""


class SubscriptionForbidden(LCLStreamError, PermissionError):
    """The caller may not manage this subscription (the message says why)."""


class SubscriptionInvalid(LCLStreamError, ValueError):
    """A subscription that does not validate: ``problems`` are ``(field, message)`` pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{f}: {m}" for f, m in problems))


class UnmatchedRunStarts(BaseModel):
    """Run starts that no enabled subscription matched: how many, and the latest ones."""

    count: int
    data: list[dict[str, Any]] = Field(default_factory=list)


class SubscriptionSaved(BaseModel):
    """The reply to a create or update: the subscription and any overlap warnings."""

    subscription: Subscription
    warnings: list[str] = Field(default_factory=list)


class SubscriptionStore(Protocol):
    """The subscription book, its audit log and the unmatched run starts."""

    def read(self) -> SubscriptionBook: ...

    def change(self, apply: Change) -> Any:
        """Apply ``apply`` to the current book atomically (retried if another writer won), store
        the new book and append its audit entry (numbered here); returns apply's result."""
        ...

    def audit(self) -> builtins.list[AuditEntry]:
        """Oldest first."""
        ...

    def unmatched(self, limit: int = 50) -> UnmatchedRunStarts: ...


class MemorySubscriptionStore:
    """A SubscriptionStore in memory (tests; an API without Airflow)."""

    def __init__(self) -> None:
        self.book = SubscriptionBook()
        self.log: builtins.list[AuditEntry] = []
        self.unmatched_events: builtins.list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def read(self) -> SubscriptionBook:
        with self.lock:
            return self.book.model_copy(deep=True)

    def change(self, apply: Change) -> Any:
        with self.lock:
            book, entry, result = apply(self.book.model_copy(deep=True))
            self.book = book
            self.log.append(entry.model_copy(update={"seq": len(self.log) + 1}))
            return result

    def audit(self) -> builtins.list[AuditEntry]:
        with self.lock:
            return list(self.log)

    def unmatched(self, limit: int = 50) -> UnmatchedRunStarts:
        with self.lock:
            events = self.unmatched_events[::-1][:limit]
            return UnmatchedRunStarts(count=len(self.unmatched_events), data=events)


def _entry(action: Any, who: str, old: Subscription | None, new: Subscription | None) -> AuditEntry:
    subject = new or old
    assert subject is not None
    return AuditEntry(
        seq=0,
        at=now(),
        who=who,
        action=action,
        subscription=subject.id,
        owner=subject.owner,
        diff=diff(audit_view(old), audit_view(new)),
    )


def visible(book: SubscriptionBook, caller: str, admin: bool) -> builtins.list[Subscription]:
    return [s for s in book.subscriptions if admin or s.owner == caller]


def find(book: SubscriptionBook, subscription_id: str, caller: str, admin: bool) -> Subscription:
    """The subscription if the caller may see it; others' are "not found" (never revealed)."""
    found = book.get(subscription_id)
    if found is None or not (admin or found.owner == caller):
        raise SubscriptionNotFound(subscription_id)
    return found


def _validate(
    subscription: Subscription,
    caller: str,
    admin: bool,
    templates: ConsumerTemplates,
    managers: dict[str, str],
) -> None:
    refusal = manage_refusal(caller, admin, subscription.match, managers)
    if refusal is not None:
        raise SubscriptionForbidden(refusal)
    problems = check_template(subscription.template, subscription.match, templates)
    if problems:
        raise SubscriptionInvalid(problems)


def create(
    store: SubscriptionStore,
    spec: SubscriptionSpec,
    caller: str,
    admin: bool,
    templates: ConsumerTemplates,
    managers: dict[str, str],
) -> SubscriptionSaved:
    """Save a new subscription owned by ``spec.owner`` (admins) or the caller."""
    owner = spec.owner or caller
    if owner != caller and not admin:
        raise SubscriptionForbidden("only admins create subscriptions for another owner")
    try:
        check_user(owner)
    except SubmissionError as err:
        raise SubscriptionInvalid([("owner", m) for _, m in err.problems]) from None
    stamp = now()
    draft = Subscription(
        id="sub0",
        owner=owner,
        match=spec.match,
        template=spec.template,
        enabled=spec.enabled,
        description=spec.description,
        created=stamp,
        created_by=caller,
        updated=stamp,
        updated_by=caller,
    )
    _validate(draft, caller, admin, templates, managers)

    def apply(book: SubscriptionBook) -> tuple[SubscriptionBook, AuditEntry, SubscriptionSaved]:
        saved = draft.model_copy(update={"id": f"sub{book.next_id}"})
        warnings = overlaps(saved, book)
        book.subscriptions.append(saved)
        book.next_id += 1
        return (
            book,
            _entry("create", caller, None, saved),
            SubscriptionSaved(subscription=saved, warnings=warnings),
        )

    result: SubscriptionSaved = store.change(apply)
    return result


def update(
    store: SubscriptionStore,
    subscription_id: str,
    patch: SubscriptionPatch,
    caller: str,
    admin: bool,
    templates: ConsumerTemplates,
    managers: dict[str, str],
) -> SubscriptionSaved:
    """Change the fields ``patch`` gives; a change of ``enabled`` alone is enable/disable."""
    changes = patch.model_dump(exclude_unset=True)

    def apply(book: SubscriptionBook) -> tuple[SubscriptionBook, AuditEntry, SubscriptionSaved]:
        old = find(book, subscription_id, caller, admin)
        # the caller must be allowed to manage the subscription as it is and as it will be
        refusal = manage_refusal(caller, admin, old.match, managers)
        if refusal is not None:
            raise SubscriptionForbidden(refusal)
        fields = {k: getattr(patch, k) for k in changes}
        new = old.model_copy(update={**fields, "updated": now(), "updated_by": caller})
        _validate(new, caller, admin, templates, managers)
        book.subscriptions = [new if s.id == old.id else s for s in book.subscriptions]
        action = "update"
        if set(changes) == {"enabled"}:
            action = "enable" if new.enabled else "disable"
        return (
            book,
            _entry(action, caller, old, new),
            SubscriptionSaved(subscription=new, warnings=overlaps(new, book)),
        )

    result: SubscriptionSaved = store.change(apply)
    return result


def delete(
    store: SubscriptionStore,
    subscription_id: str,
    caller: str,
    admin: bool,
    managers: dict[str, str],
) -> Subscription:
    """Remove a subscription (its audit entries stay)."""

    def apply(book: SubscriptionBook) -> tuple[SubscriptionBook, AuditEntry, Subscription]:
        old = find(book, subscription_id, caller, admin)
        refusal = manage_refusal(caller, admin, old.match, managers)
        if refusal is not None:
            raise SubscriptionForbidden(refusal)
        book.subscriptions = [s for s in book.subscriptions if s.id != old.id]
        return book, _entry("delete", caller, old, None), old

    result: Subscription = store.change(apply)
    return result


def audit_for(
    store: SubscriptionStore,
    caller: str,
    admin: bool,
    subscription_id: str | None = None,
    limit: int = 100,
) -> builtins.list[AuditEntry]:
    """Newest first: the caller's subscriptions' entries (admins: all), of one or all."""
    entries = [
        e
        for e in store.audit()
        if (admin or e.owner == caller)
        and (subscription_id is None or e.subscription == subscription_id)
    ]
    return entries[::-1][:limit]
