"""The Kafka KRaft broker of scripts/services/kafka.sh: produce, consume in a group, commit."""

from __future__ import annotations

import uuid

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

pytestmark = pytest.mark.kafka


def test_produce_consume_commit(kafka_service: str) -> None:
    topic = f"lclstream-test-{uuid.uuid4().hex[:8]}"
    group = f"{topic}-group"

    producer = KafkaProducer(bootstrap_servers=kafka_service, acks="all")
    try:
        producer.send(topic, key=b"run-1", value=b"hello").get(timeout=30)
        producer.flush(timeout=30)
    finally:
        producer.close()

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_service,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=30_000,
    )
    try:
        message = next(iter(consumer))
        assert (message.key, message.value, message.offset) == (b"run-1", b"hello", 0)
        consumer.commit()
    finally:
        consumer.close()

    partition = TopicPartition(topic, 0)
    admin = KafkaAdminClient(bootstrap_servers=kafka_service)
    try:
        offsets = admin.list_group_offsets(group)[group]
    finally:
        admin.close()
    assert offsets[partition].offset == 1

    # A new member of the same group resumes after the committed message.
    fresh = KafkaConsumer(bootstrap_servers=kafka_service, group_id=group)
    try:
        assert fresh.committed(partition) == 1
    finally:
        fresh.close()
