"""An AssetWatcher trigger that fires on LCLS Elog run events read from Kafka."""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from airflow.triggers.base import BaseEventTrigger, TriggerEvent
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from airflow_provider_lclstream.exceptions import LCLStreamError
from airflow_provider_lclstream.triggers.elog_messages import (
    FILES_TOPIC,
    RUNS_TOPIC,
    ElogEvent,
    ElogEventFilter,
    MalformedElogMessage,
    parse_elog_message,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from kafka.consumer.fetcher import ConsumerRecord

T = TypeVar("T")
_RUN_KINDS = frozenset({"run_start", "run_end"})
_MAX_BACKOFF_S = 30.0


class ElogTriggerError(LCLStreamError):
    """The Kafka consumer failed more times in a row than ``max_reconnects`` allows."""


class ElogRunEventTrigger(BaseEventTrigger):
    """Yield one ``TriggerEvent`` per Elog run start, run end or file registration.

    Use it in an ``AssetWatcher``. Payloads are :class:`ElogEvent` dicts (``kind``,
    ``experiment``, ``run``, ``time``, plus ``run_type``/``params``/``path`` where known and the
    record's ``topic``/``partition``/``offset``).

    The consumer group ``group_id`` holds the position: the offset of a message is committed once
    the triggerer has taken its event (after the ``yield``), and that of a skipped message
    (malformed, filtered out, not an event) with the rest of its poll batch, so a restarted
    trigger neither fires again for old runs nor misses new ones. A group with no committed offset
    starts at ``auto_offset_reset`` (``latest``: only runs from the first poll on). Kafka calls
    run one at a time on a private thread, never on the event loop.

    Errors: a malformed message is logged and skipped. Consumer failures are retried with a
    fresh consumer; after ``max_reconnects`` failures in a row the trigger raises
    :class:`ElogTriggerError` rather than yielding an error event, because any event of an
    AssetWatcher's trigger schedules DAG runs.
    """

    def __init__(
        self,
        *,
        bootstrap_servers: str | list[str] | None = None,
        group_id: str,
        experiment_pattern: str | None = None,
        run_types: list[str] | None = None,
        kinds: list[str] | None = None,
        runs_topic: str = RUNS_TOPIC,
        files_topic: str = FILES_TOPIC,
        auto_offset_reset: Literal["latest", "earliest"] = "latest",
        poll_timeout: float = 1.0,
        max_records: int = 100,
        max_reconnects: int = 5,
        consumer_config: dict[str, Any] | None = None,
        kafka_conn_id: str | None = None,
    ) -> None:
        """``consumer_config``: extra ``KafkaConsumer`` settings (plain JSON, no secrets).

        ``kafka_conn_id`` names a ``lclstream_kafka`` connection: its bootstrap servers and
        SASL/TLS settings (secrets included) are read when the consumer connects, so only the
        connection id is serialized. ``bootstrap_servers`` is then not needed.
        """
        super().__init__()
        if not bootstrap_servers and not kafka_conn_id:
            raise ValueError("give bootstrap_servers or kafka_conn_id (a lclstream_kafka conn)")
        if not group_id:
            raise ValueError("group_id must be a non-empty consumer group id")
        if auto_offset_reset not in ("latest", "earliest"):
            raise ValueError(
                f"auto_offset_reset must be 'latest' or 'earliest', not {auto_offset_reset!r}"
            )
        self.event_filter = ElogEventFilter.build(experiment_pattern, run_types, kinds)
        self.bootstrap_servers = bootstrap_servers
        self.group_id = group_id
        self.experiment_pattern = experiment_pattern
        self.run_types = None if run_types is None else sorted(run_types)
        self.kinds = sorted(self.event_filter.kinds)
        self.runs_topic = runs_topic
        self.files_topic = files_topic
        self.auto_offset_reset = auto_offset_reset
        self.poll_timeout = poll_timeout
        self.max_records = max_records
        self.max_reconnects = max_reconnects
        self.consumer_config = dict(consumer_config or {})
        self.kafka_conn_id = kafka_conn_id
        self._consumer: KafkaConsumer | None = None
        self._executor: ThreadPoolExecutor | None = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "bootstrap_servers": self.bootstrap_servers,
                "group_id": self.group_id,
                "experiment_pattern": self.experiment_pattern,
                "run_types": self.run_types,
                "kinds": self.kinds,
                "runs_topic": self.runs_topic,
                "files_topic": self.files_topic,
                "auto_offset_reset": self.auto_offset_reset,
                "poll_timeout": self.poll_timeout,
                "max_records": self.max_records,
                "max_reconnects": self.max_reconnects,
                "consumer_config": self.consumer_config,
                "kafka_conn_id": self.kafka_conn_id,
            },
        )

    @property
    def topics(self) -> list[str]:
        """The topics the chosen event kinds come from."""
        topics = []
        if _RUN_KINDS & set(self.kinds):
            topics.append(self.runs_topic)
        if "file_registered" in self.kinds:
            topics.append(self.files_topic)
        return topics

    async def run(self) -> AsyncIterator[TriggerEvent]:
        # Offsets of records handed over (yielded) or skipped, not yet committed. Only those:
        # a record's offset is added right before its event is yielded, with no await between.
        pending: dict[TopicPartition, OffsetAndMetadata] = {}
        failures = 0
        try:
            while True:
                try:
                    records = await self._call(self._poll)
                    failures = 0
                except KafkaError as err:
                    failures += 1
                    if failures > self.max_reconnects:
                        raise ElogTriggerError(
                            f"Kafka consumer of group {self.group_id!r} at "
                            f"{self._where()} failed {failures} times in a row: {err}; "
                            "check that the brokers are reachable and the topics readable"
                        ) from err
                    delay = min(2.0**failures, _MAX_BACKOFF_S)
                    self.log.warning("Kafka poll failed (%s); reconnecting in %.0f s", err, delay)
                    await self._call(self._drop_consumer)
                    await asyncio.sleep(delay)
                    continue
                for record in records:
                    event = self._event(record)
                    pending[TopicPartition(record.topic, record.partition)] = OffsetAndMetadata(
                        record.offset + 1, "", -1
                    )
                    if event is not None:
                        yield TriggerEvent(event)
                        await self._commit(pending)
                if pending:
                    await self._commit(pending)
        finally:
            # Closed or cancelled right after a yield: that event was taken, so commit it.
            try:
                if pending:
                    await self._commit(pending)
            finally:
                await self._close()

    async def cleanup(self) -> None:
        await self._close()

    def _where(self) -> str:
        if self.kafka_conn_id:
            return f"connection {self.kafka_conn_id!r}"
        return str(self.bootstrap_servers)

    def _connect(self) -> KafkaConsumer:
        """Open the consumer and subscribe (the seam tests replace).

        With ``kafka_conn_id`` the connection is read here, on the trigger's Kafka thread; a
        broker that takes the TCP connection but drops the SASL session raises
        :class:`KafkaLoginRefused`, naming the user and connection, never the password.
        """
        from airflow_provider_lclstream.hooks.kafka import (
            KafkaHook,
            KafkaLoginRefused,
            describe_auth_failure,
            reachable,
        )

        settings = None
        connection: dict[str, Any] = {"bootstrap_servers": self.bootstrap_servers}
        if self.kafka_conn_id:
            settings = KafkaHook(self.kafka_conn_id).get_settings()
            connection = settings.kafka_config()
        try:
            consumer = KafkaConsumer(
                **{
                    "client_id": f"lclstream-elog-{self.group_id}",
                    **connection,
                    **self.consumer_config,
                    "bootstrap_servers": connection["bootstrap_servers"],
                    "group_id": self.group_id,
                    "enable_auto_commit": False,
                    "auto_offset_reset": self.auto_offset_reset,
                }
            )
        except KafkaError as err:
            sasl = settings is not None and settings.security_protocol.startswith("SASL")
            if settings is not None and sasl and reachable(settings.bootstrap_servers):
                raise KafkaLoginRefused(
                    describe_auth_failure(settings, str(self.kafka_conn_id), err)
                ) from None
            raise
        consumer.subscribe(self.topics)
        return consumer

    def _poll(self) -> list[ConsumerRecord]:
        if self._consumer is None:
            self._consumer = self._connect()
        batches = self._consumer.poll(
            timeout_ms=int(self.poll_timeout * 1000), max_records=self.max_records
        )
        return [record for batch in batches.values() for record in batch]

    def _event(self, record: ConsumerRecord) -> ElogEvent | None:
        """Parse and filter one record; a bad message is logged and gives ``None``."""
        where = f"{record.topic}[{record.partition}]@{record.offset}"
        try:
            event = parse_elog_message(
                record.topic,
                record.value,
                runs_topic=self.runs_topic,
                files_topic=self.files_topic,
                timestamp_ms=record.timestamp,
            )
        except MalformedElogMessage as err:
            self.log.warning("Skipping malformed Elog message %s: %s", where, err)
            return None
        except Exception:  # a parser bug must not stop the watcher
            self.log.exception("Skipping Elog message %s that could not be parsed", where)
            return None
        if event is None or not self.event_filter.matches(event):
            return None
        event["topic"] = record.topic
        event["partition"] = record.partition
        event["offset"] = record.offset
        return event

    async def _commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        """Commit ``offsets`` (best effort) and empty the dict."""

        snapshot = dict(offsets)

        def commit() -> None:
            if self._consumer is not None:
                self._consumer.commit(snapshot)

        try:
            await self._call(commit)
        except KafkaError as err:  # e.g. a rebalance: the next owner re-reads these messages
            self.log.warning("Could not commit offsets %s: %s", offsets, err)
        offsets.clear()

    def _drop_consumer(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                consumer.close()
            except Exception as err:
                self.log.warning("Closing the Kafka consumer failed: %s", err)

    async def _call(self, func: Callable[..., T], *args: Any) -> T:
        """Run ``func`` on the trigger's single Kafka thread, so calls never overlap."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="elog-trigger")
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, functools.partial(func, *args)
        )

    async def _close(self) -> None:
        """Close the consumer after any poll in flight, then release the thread."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        try:
            await asyncio.wrap_future(executor.submit(self._drop_consumer))
        finally:
            executor.shutdown(wait=False)
