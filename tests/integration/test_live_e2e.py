"""Issue #13's live scenario end to end on the real services: ``lclstream-replay``'s
``replay()`` publishes the Elog run start on Kafka and writes a 2-stream run at 120 Hz into the
standalone Airflow's ``[lclstream] xtc_dir``; ``lclstream_on_run_start`` (its AssetWatcher in
the triggerer) starts ``lclstream_transfer`` for it, whose streamer is a 4-rank psana2 live-mode
job on SLURM, with buffer and consumer jobs. The first event must reach the consumer while the
replay is still writing, and every event written must arrive exactly once.

The transfer is chosen by a subscription (the Variable ``lclstream_subscriptions``, set for this
test and removed after it): the quick-start form of ``lclstream_on_run_start`` has no
``access_mode`` and 2 ranks. psana asks ``[lclstream] logbook_url`` for the run's files: a FAKE
Elog on ``LOGBOOK_PORT`` (``tests/standalone.py``) lists them. The replay publishes the run start
at once but writes its first dgram only once psana has asked for the files, i.e. once the
streamer follows the run (a DAQ would not wait; the test must not depend on how long Airflow and
SLURM take to start the jobs on a loaded machine). The test node has 2 CPUs, so the streamer
job asks SLURM for one task (``attributes: {ntasks: "1"}``) and ``mpiexec -n 4`` runs the ranks
in it.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import h5py
import pytest

from airflow_provider_lclstream.config.subscriptions import (
    SUBSCRIPTIONS_VARIABLE,
    Subscription,
    SubscriptionBook,
    SubscriptionMatch,
)
from airflow_provider_lclstream.consumer.records import MessageRecord
from airflow_provider_lclstream.streamer.replay import KafkaRunMessages, replay
from tests.airflow_api import AirflowApi
from tests.fake_elog import FakeElog
from tests.integration.test_transfer_e2e import GROUP, ensure_topics, wait_for_group_member
from tests.psana_data import write_run
from tests.standalone import LOGBOOK_PORT

pytestmark = [
    pytest.mark.airflow,
    pytest.mark.slurm,
    pytest.mark.kafka,
    pytest.mark.psana,
    pytest.mark.mpi,
]
EXP = "xpptut15"
EVENTS = 1200  # 10 s at 120 Hz
RATE_HZ = 120.0
RANKS = 4
SOURCE_RUN = 70


def subscription_book(output_dir: Path) -> str:
    now = dt.datetime.now(dt.UTC)
    template = {
        "access_mode": "live",
        "ranks": RANKS,
        "detector_name": "xppcspad",
        "mode": "raw",
        "img_per_file": 10,
        "output_dir": str(output_dir),
        **{role: {"backend": "slurm"} for role in ("buffer", "consumer")},
        # the test node has 2 CPUs: SLURM never allocates 4 tasks there, so the job asks for
        # one task and mpiexec (hydra, not srun) starts the 4 ranks inside it
        "streamer": {"backend": "slurm", "attributes": {"ntasks": "1"}},
    }
    subscription = Subscription(
        id="sub1", owner="admin", match=SubscriptionMatch(experiment=EXP), template=template,
        description="test_live_e2e", created=now, created_by="admin", updated=now,
        updated_by="admin",
    )  # fmt: skip
    return SubscriptionBook(next_id=2, subscriptions=[subscription]).model_dump_json()


def set_variable(api: AirflowApi, key: str, value: str | None) -> None:
    if value is None:
        api.client.delete(f"/variables/{key}")
        return
    api.client.delete(f"/variables/{key}")
    api.client.post("/variables", json={"key": key, "value": value}).raise_for_status()


def failed_logs(api: AirflowApi, run_id: str, tasks: dict[str, str | None]) -> str:
    """The end of each failed task's log (for a failure's message)."""
    out = []
    for task_id in [t for t, state in tasks.items() if state == "failed"]:
        data = api.get(
            f"/dags/lclstream_transfer/dagRuns/{run_id}/taskInstances/{task_id}/logs/1",
            full_content=True,
        )
        content = data.get("content", "")
        text = content if isinstance(content, str) else "\n".join(str(c) for c in content)
        out.append(f"--- {task_id}\n{text[-3000:]}")
    return "\n".join(out)


def consumer_files(directory: Path) -> tuple[list[int], list[MessageRecord]]:
    """Every event timestamp in the consumers' HDF5 files, and their message records."""
    stamps: list[int] = []
    for path in sorted(directory.rglob("*.h5")):
        with h5py.File(path) as f:
            stamps += [int(t) for t in f["/data/timestamp"][()].reshape(-1)]
    records = [
        MessageRecord.model_validate(json.loads(line))
        for path in sorted(directory.rglob("*_messages.jsonl"))
        for line in path.read_text().splitlines()
        if line.strip()
    ]
    return stamps, records


def test_a_replayed_run_streams_live_from_its_kafka_run_start(
    airflow_standalone: dict[str, Any], tmp_path: Path
) -> None:
    standalone = airflow_standalone
    api = AirflowApi(standalone["url"], standalone["user"], standalone["password"])
    bootstrap = standalone["kafka"]
    xtc_dir = Path(standalone["env"]["AIRFLOW__LCLSTREAM__XTC_DIR"])
    run = 700 + int(time.time()) % 250  # a run the session's xtc_dir does not hold yet
    source = write_run(tmp_path / "recorded", EXP, SOURCE_RUN, streams=2, events=EVENTS)
    output = standalone["output"] / f"live-e2e-{run}"
    fake = FakeElog(port=LOGBOOK_PORT).start()
    fake.add_run_files(
        EXP, run, [f"/xpp/{EXP}/xtc/{EXP}-r{run:04d}-s{s:03d}-c000.xtc2" for s in (0, 1)]
    )
    asked = f"/lgbk/{EXP}/ws/{run}/current_files_for_live_mode"
    kafka = KafkaRunMessages(bootstrap)
    try:
        ensure_topics(bootstrap)
        set_variable(api, SUBSCRIPTIONS_VARIABLE, subscription_book(output))
        api.unpause("lclstream_transfer")
        api.unpause("lclstream_on_run_start")
        wait_for_group_member(bootstrap, GROUP)
        known = {r["dag_run_id"] for r in api.runs("lclstream_transfer")}
        timing: dict[str, float] = {}

        def run_start() -> None:
            """The run start on Kafka; then wait until psana follows the run (see above)."""
            kafka.run_start(EXP, run)
            timing["run_start"] = time.monotonic()
            deadline = time.monotonic() + 150
            while not any(get.endswith(asked) for get in fake.gets):
                if time.monotonic() > deadline or not int(time.monotonic() * 10) % 20:
                    runs = api.runs("lclstream_transfer")
                    new = [r["dag_run_id"] for r in runs if r["dag_run_id"] not in known]
                    tasks = api.tasks("lclstream_transfer", new[0]) if new else {}
                    if "failed" in tasks.values():
                        pytest.fail(
                            f"transfer {new[0]}: {tasks}\n{failed_logs(api, new[0], tasks)}"
                        )
                    assert time.monotonic() < deadline, (
                        f"psana never asked for run {run}'s files: transfers {new}, tasks {tasks}"
                    )
                time.sleep(0.1)
            timing["psana_asked"] = time.monotonic()

        stats = replay(
            source, xtc_dir, EXP, SOURCE_RUN, rate_hz=RATE_HZ, dest_run=run, on_start=run_start,
            on_end=lambda: kafka.run_end(EXP, run),
        )  # fmt: skip
        last_written = stats.l1_written[-1][1]  # wall time of the run's last L1Accept
        run_id = api.wait_for_new_run("lclstream_transfer", known, timeout=60)
        state = api.wait_for_run("lclstream_transfer", run_id, timeout=180)
        took = time.monotonic() - timing["run_start"]
    finally:
        kafka.close()
        fake.stop()
        set_variable(api, SUBSCRIPTIONS_VARIABLE, None)
    tasks = api.tasks("lclstream_transfer", run_id)
    assert state == "success", tasks
    conf = api.get(f"/dags/lclstream_transfer/dagRuns/{run_id}")["conf"]
    assert conf["request"]["access_mode"] == "live" and conf["request"]["ranks"] == RANKS, conf
    final = api.xcom("lclstream_transfer", run_id, "watch_transfer")
    assert final["producers_ended"] == RANKS and final["lost"] == 0, final
    stamps, records = consumer_files(output)
    written = [ts for ts, _ in stats.l1_written]
    assert len(written) == EVENTS
    assert len(stamps) == len(set(stamps)) == EVENTS, (len(stamps), len(set(stamps)))
    assert sorted(stamps) == sorted(written)  # every event written, exactly once
    assert final["events"] == EVENTS, final
    first_arrival = min(r.received_at for r in records)
    assert first_arrival < last_written, (first_arrival, last_written)
    print(
        f"live e2e: run {run}, {EVENTS} events at {RATE_HZ:g} Hz, {RANKS} ranks: psana followed "
        f"{timing['psana_asked'] - timing['run_start']:.1f} s after the run start; first event "
        f"arrived {last_written - first_arrival:.1f} s before the replay's last L1Accept; "
        f"{len(stamps)} of {EVENTS} events, each once; run start -> transfer success {took:.1f} s"
    )
