"""``lclstream-replay --kafka`` on the test Kafka broker: the Elog's run-start message goes out
before the first dgram is written, the run-end message after the files got their final names."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from kafka import KafkaConsumer

from tests.psana_data import write_run

pytestmark = [pytest.mark.kafka, pytest.mark.psana]
BIN = Path(sys.executable).parent


def test_replay_publishes_run_start_and_run_end(kafka_service: str, tmp_path: Path) -> None:
    source = write_run(tmp_path / "rec", "xpptut15", 60, streams=2, events=6)
    dest = tmp_path / "live"
    topic = f"lclstream-replay-{uuid.uuid4().hex[:8]}"
    timeline = tmp_path / "written.jsonl"
    done = subprocess.run(
        [str(BIN / "lclstream-replay"), "--source", str(source), "--exp", "xpptut15",
         "--run", "60", "--dest", str(dest), "--as-run", "61", "--rate", "20",
         "--kafka", kafka_service, "--topic", topic, "--timeline", str(timeline)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    consumer = KafkaConsumer(
        topic, bootstrap_servers=kafka_service, auto_offset_reset="earliest",
        enable_auto_commit=False, consumer_timeout_ms=30_000,
    )  # fmt: skip
    try:
        records = [next(iter(consumer)) for _ in range(2)]
    finally:
        consumer.close()
    start, end = (json.loads(r.value) for r in records)
    assert (start["experiment_name"], start["CRUD"], start["value"]["num"]) == (
        "xpptut15",
        "Create",
        61,
    )
    assert start["value"]["type"] == "DATA" and "begin_time" in start["value"]
    assert (end["experiment_name"], end["CRUD"], end["value"]["num"]) == ("xpptut15", "Update", 61)
    assert "end_time" in end["value"]
    written = [json.loads(line)["written"] for line in timeline.read_text().splitlines()]
    assert len(written) == 6
    # Kafka's record times are whole ms (rounded down): the start before the first L1Accept,
    # the end after the last.
    assert records[0].timestamp / 1000 <= written[0]
    assert records[1].timestamp / 1000 >= written[-1] - 0.001
    assert not list(dest.rglob("*.inprogress")) and len(list(dest.rglob("*.xtc2"))) == 4
