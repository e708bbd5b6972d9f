"""Parse LCLS Elog Kafka messages into run events; pure functions, no Kafka, no Airflow.

The Elog publishes JSON envelopes ``{"experiment_name": ..., "CRUD": ..., "value": {...}}``:

* topic ``runs``, ``Create``: a run started (``value.num``, ``value.begin_time``, ``value.type``,
  ``value.params``);
* topic ``runs``, ``Update`` with ``value.end_time`` set: the run ended;
* topic ``file_catalog``, ``Create``: a file was registered (``value.path``, ``value.run_num``).

Every other well-formed message (a ``Delete``, an ``Update`` without ``end_time``, another topic)
is not an event and parses to ``None``; a message that is not such an envelope raises
:class:`MalformedElogMessage`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, NotRequired, TypedDict, cast, get_args

from airflow_provider_lclstream.exceptions import LCLStreamError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

EventKind = Literal["run_start", "run_end", "file_registered"]
EVENT_KINDS: tuple[EventKind, ...] = get_args(EventKind)
RUNS_TOPIC = "runs"
FILES_TOPIC = "file_catalog"
CRUD_OPERATIONS = ("Create", "Update", "Delete")


class ElogEvent(TypedDict):
    """One run event; every value is plain JSON (a ``TriggerEvent`` payload as is)."""

    kind: EventKind
    experiment: str
    run: int
    time: str | None
    """ISO 8601: begin time, end time, or (files) the Kafka record time; ``None`` if unknown."""
    run_type: NotRequired[str | None]
    params: NotRequired[dict[str, Any]]
    path: NotRequired[str]
    topic: NotRequired[str]
    partition: NotRequired[int]
    offset: NotRequired[int]


class MalformedElogMessage(LCLStreamError, ValueError):
    """A Kafka record that is not a valid Elog envelope for its topic."""


def parse_elog_message(
    topic: str,
    raw: bytes | str | Mapping[str, Any],
    *,
    runs_topic: str = RUNS_TOPIC,
    files_topic: str = FILES_TOPIC,
    timestamp_ms: int | None = None,
) -> ElogEvent | None:
    """Turn one record value from ``topic`` into an :class:`ElogEvent`, or ``None`` if no event.

    ``timestamp_ms`` (the Kafka record time) stands in for a time the message does not carry.
    Raises :class:`MalformedElogMessage` naming the offending field.
    """
    if topic not in (runs_topic, files_topic):
        return None
    envelope = _decode(raw)
    experiment = envelope.get("experiment_name")
    if not isinstance(experiment, str) or not experiment:
        raise MalformedElogMessage("'experiment_name' must be a non-empty string")
    crud = envelope.get("CRUD")
    if crud not in CRUD_OPERATIONS:
        raise MalformedElogMessage(f"'CRUD' must be one of {CRUD_OPERATIONS}, got {crud!r}")
    value = envelope.get("value")
    if not isinstance(value, dict):
        raise MalformedElogMessage(f"'value' must be an object, got {type(value).__name__}")
    fallback = _record_time(timestamp_ms)

    if topic == runs_topic:
        if crud == "Create":
            params = value.get("params") or {}
            if not isinstance(params, dict):
                raise MalformedElogMessage("'value.params' must be an object")
            return ElogEvent(
                kind="run_start",
                experiment=experiment,
                run=_run_number(value, "num"),
                time=_time(value, "begin_time") or fallback,
                run_type=_optional_str(value, "type"),
                params=params,
            )
        if crud == "Update" and value.get("end_time") is not None:
            return ElogEvent(
                kind="run_end",
                experiment=experiment,
                run=_run_number(value, "num"),
                time=_time(value, "end_time"),
                run_type=_optional_str(value, "type"),
            )
        return None

    if crud != "Create":
        return None
    path = value.get("path")
    if not isinstance(path, str) or not path:
        raise MalformedElogMessage("'value.path' must be a non-empty string")
    return ElogEvent(
        kind="file_registered",
        experiment=experiment,
        run=_run_number(value, "run_num"),
        time=fallback,
        path=path,
    )


@dataclass(frozen=True)
class ElogEventFilter:
    """Which events a trigger fires on.

    ``experiment_pattern`` must match the whole experiment name (``re.fullmatch``). ``run_types``
    applies to events that carry a run type; file registrations (and run ends whose update omits
    the type) carry none and pass it.
    """

    experiment_pattern: str | None = None
    run_types: frozenset[str] | None = None
    kinds: frozenset[EventKind] = frozenset(EVENT_KINDS)

    @classmethod
    def build(
        cls,
        experiment_pattern: str | None = None,
        run_types: Iterable[str] | None = None,
        kinds: Iterable[str] | None = None,
    ) -> ElogEventFilter:
        """Validate plain arguments (as stored in a trigger's kwargs) into a filter."""
        if experiment_pattern is not None:
            try:
                re.compile(experiment_pattern)
            except re.error as err:
                raise ValueError(f"experiment_pattern {experiment_pattern!r}: {err}") from err
        chosen = frozenset(EVENT_KINDS if kinds is None else kinds)
        unknown = sorted(chosen - set(EVENT_KINDS))
        if unknown or not chosen:
            raise ValueError(f"kinds must be a non-empty subset of {EVENT_KINDS}, got {unknown}")
        return cls(
            experiment_pattern=experiment_pattern,
            run_types=None if run_types is None else frozenset(run_types),
            kinds=cast("frozenset[EventKind]", chosen),
        )

    def matches(self, event: ElogEvent) -> bool:
        if event["kind"] not in self.kinds:
            return False
        if self.experiment_pattern is not None and not re.fullmatch(
            self.experiment_pattern, event["experiment"]
        ):
            return False
        run_type = event.get("run_type")
        return self.run_types is None or run_type is None or run_type in self.run_types


def _decode(raw: bytes | str | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(raw, bytes | str):
        try:
            raw = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise MalformedElogMessage(f"not JSON: {err}") from err
    if not isinstance(raw, dict):
        raise MalformedElogMessage(f"envelope must be a JSON object, got {type(raw).__name__}")
    return raw


def _run_number(value: dict[str, Any], key: str) -> int:
    number = value.get(key)
    if isinstance(number, str) and number.isdigit():
        return int(number)
    if isinstance(number, int) and not isinstance(number, bool) and number >= 0:
        return number
    raise MalformedElogMessage(f"'value.{key}' must be a run number, got {number!r}")


def _optional_str(value: dict[str, Any], key: str) -> str | None:
    item = value.get(key)
    if item is None or isinstance(item, str):
        return item
    raise MalformedElogMessage(f"'value.{key}' must be a string, got {item!r}")


def _time(value: dict[str, Any], key: str) -> str | None:
    """An ISO string as given; a number is read as seconds since the epoch (UTC)."""
    item = value.get(key)
    if item is None or isinstance(item, str):
        return item
    if isinstance(item, int | float) and not isinstance(item, bool):
        try:
            return datetime.fromtimestamp(item, UTC).isoformat()
        except (OverflowError, OSError, ValueError) as err:
            raise MalformedElogMessage(f"'value.{key}' is not a time: {item!r}") from err
    raise MalformedElogMessage(f"'value.{key}' must be an ISO time, got {item!r}")


def _record_time(timestamp_ms: int | None) -> str | None:
    if timestamp_ms is None or timestamp_ms < 0:
        return None
    return datetime.fromtimestamp(timestamp_ms / 1000, UTC).isoformat()
