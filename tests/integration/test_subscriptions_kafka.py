"""Subscriptions drive ``lclstream_on_run_start`` on the real services: Elog run starts on Kafka
(the AssetWatcher in a running Airflow's triggerer) for two subscribed experiments and one that
nobody subscribed to.

Experiment A has two subscriptions (two transfers per run start), experiment B one
(instrument + pattern); each transfer carries its subscription's detector, consumers and id. C's
run start is counted as unmatched. The three come as a burst, which Airflow 3.3 splits over DAG
runs in its own way (see ``operators/run_start.py``): each still gives its transfers at once.
A run-start event replayed into the asset starts nothing twice, and a subscription disabled
through the API stops its next run start with no restart.

``lclstream_transfer`` is paused for the test: the transfers are checked as the DAG runs they
are (queued, with their conf), then deleted; streaming itself is covered by the e2e tests.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from kafka import KafkaProducer

from tests.airflow_api import AirflowApi
from tests.integration.test_transfer_e2e import ensure_topics, wait_for_group_member

pytestmark = [pytest.mark.airflow, pytest.mark.slurm, pytest.mark.kafka, pytest.mark.psana]
GROUP = "lclstream-on-run-start"
TRANSFER = "lclstream_transfer"
RUN_START = "lclstream_on_run_start"


def run_start(producer: KafkaProducer, experiment: str, run: int) -> int:
    message = {
        "experiment_name": experiment,
        "CRUD": "Create",
        "value": {"num": run, "begin_time": "2026-12-01T10:00:00Z", "type": "DATA", "params": {}},
    }
    return int(producer.send("runs", json.dumps(message).encode()).get(timeout=60).offset)


class Env:
    def __init__(self, standalone: dict[str, Any]) -> None:
        self.api = AirflowApi(standalone["url"], standalone["user"], standalone["password"])
        self.plugin = httpx.Client(
            base_url=f"{standalone['url']}/lclstream/v1",
            headers=dict(self.api.client.headers),
            timeout=30,
        )
        self.created: list[str] = []
        self.known = self.transfer_ids()

    def transfer_runs(self) -> list[dict[str, Any]]:
        return list(self.api.get(f"/dags/{TRANSFER}/dagRuns", limit=200)["dag_runs"])

    def transfer_ids(self) -> set[str]:
        return {r["dag_run_id"] for r in self.transfer_runs()}

    def subscribe(self, spec: dict[str, Any]) -> str:
        r = self.plugin.post("/subscriptions", json=spec)
        assert r.status_code == 201, r.text
        sid = str(r.json()["subscription"]["id"])
        self.created.append(sid)
        return sid

    def new_transfers(self, experiments: set[str]) -> dict[str, dict[str, Any]]:
        """New transfer runs of these experiments: run id -> conf."""
        return {
            r["dag_run_id"]: r["conf"]
            for r in self.transfer_runs()
            if r["dag_run_id"] not in self.known
            and ((r.get("conf") or {}).get("event") or {}).get("experiment") in experiments
        }

    def wait_transfers(
        self, experiments: set[str], count: int, timeout: float = 90
    ) -> dict[str, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.new_transfers(experiments)
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.5)

    def unmatched(self) -> dict[str, Any]:
        r = self.plugin.get("/subscriptions/unmatched", params={"limit": 200})
        assert r.status_code == 200, r.text
        return dict(r.json())

    def run_start_ids(self) -> set[str]:
        return {r["dag_run_id"] for r in self.api.runs(RUN_START)}

    def announce(self, producer: KafkaProducer, experiment: str, run: int) -> int:
        """Publish a run start and wait for the DAG run it schedules."""
        before = self.run_start_ids()
        offset = run_start(producer, experiment, run)
        self.wait_new_run_start(before)
        return offset

    def wait_new_run_start(self, before: set[str], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self.run_start_ids() - before:
            assert time.monotonic() < deadline, "the run start scheduled no lclstream_on_run_start"
            time.sleep(0.3)

    def wait_run_starts_done(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while True:
            states = [r["state"] for r in self.api.runs(RUN_START)]
            if all(s in ("success", "failed") for s in states):
                assert "failed" not in states, states
                return
            assert time.monotonic() < deadline, states
            time.sleep(0.5)


@pytest.fixture
def env(airflow_standalone: dict[str, Any]) -> Iterator[Env]:
    env = Env(airflow_standalone)
    ensure_topics(airflow_standalone["kafka"])
    env.api.wait_for_dag(TRANSFER)
    was_paused = env.api.get(f"/dags/{TRANSFER}")["is_paused"]
    env.api.client.patch(f"/dags/{TRANSFER}", json={"is_paused": True}).raise_for_status()
    env.api.unpause(RUN_START)
    try:
        yield env
    finally:
        for sid in env.created:  # the quick start is back for the tests after this one
            env.plugin.delete(f"/subscriptions/{sid}")
        for run_id in env.transfer_ids() - env.known:
            env.api.client.delete(f"/dags/{TRANSFER}/dagRuns/{run_id}")
        env.api.client.patch(f"/dags/{TRANSFER}", json={"is_paused": was_paused})


def test_run_starts_follow_the_subscriptions(env: Env, airflow_standalone: dict[str, Any]) -> None:
    bootstrap = airflow_standalone["kafka"]
    suffix = uuid.uuid4().hex[:6]
    exp_a, exp_b, exp_c = f"mfxs{suffix}", f"cxis{suffix}", f"xpps{suffix}"
    ours = {exp_a, exp_b, exp_c}
    a1 = env.subscribe(
        {
            "match": {"experiment": exp_a},
            "template": {"detector_name": "jungfrau4M", "consumers": 2},
        }
    )
    a2 = env.subscribe(
        {
            "match": {"experiment": exp_a, "run_types": ["DATA"]},
            "template": {"detector_name": "epix10k2M", "consumers": 1, "output_dir": "/tmp/a2"},
        }
    )
    b = env.subscribe(
        {
            "match": {"instrument": "cxi", "pattern": f"cxis{suffix}"},
            "template": {"detector_name": "xppcspad", "mode": "calib", "consumers": 3},
        }
    )
    unmatched_before = env.unmatched()["count"]
    wait_for_group_member(bootstrap, GROUP)
    started = time.monotonic()
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        # a burst: Airflow 3.3 leaves the run starts that arrive while the scheduler creates the
        # first one's DAG run to the next DAG run; start_transfer takes them itself
        offsets = {
            exp: run_start(producer, exp, run) for exp, run in ((exp_a, 1), (exp_b, 2), (exp_c, 3))
        }
        found = env.wait_transfers(ours, 3)
        env.wait_run_starts_done()
        found = env.new_transfers(ours)  # nothing more came after the run starts finished
        print(f"3 run starts -> {len(found)} transfers in {time.monotonic() - started:.1f} s")
        got = sorted(
            (c["subscription"], c["event"]["experiment"], c["request"]["detector_name"],
             c["request"]["consumers"], c["user"])
            for c in found.values()
        )  # fmt: skip
        assert got == sorted(
            [
                (a1, exp_a, "jungfrau4M", 2, "admin"),
                (a2, exp_a, "epix10k2M", 1, "admin"),
                (b, exp_b, "xppcspad", 3, "admin"),
            ]
        ), got
        for run_id, conf in found.items():
            assert run_id.startswith(f"{conf['subscription']}__"), run_id
            assert conf["request"]["run"] == conf["event"]["run"]
            assert conf["event"]["offset"] == offsets[conf["event"]["experiment"]]
        [b_conf] = [c for c in found.values() if c["subscription"] == b]
        assert b_conf["request"]["mode"] == "calib"

        unmatched = env.unmatched()
        assert unmatched["count"] == unmatched_before + 1, unmatched
        assert [
            (e["experiment"], e["run"]) for e in unmatched["data"] if e["experiment"] in ours
        ] == [(exp_c, 3)]
        # the transfers API tags each transfer with its subscription
        listed = env.plugin.get("/transfers", params={"limit": 200}).json()["data"]
        tags = {t["id"]: t["subscription"] for t in listed if t["id"] in found}
        assert tags == {rid: c["subscription"] for rid, c in found.items()}

        # a replayed run-start event (the same Kafka message again) starts nothing twice
        [a1_conf] = [c for c in found.values() if c["subscription"] == a1]
        asset = env.api.get("/assets", name_pattern="lclstream_elog_run_starts")["assets"][0]
        before = env.run_start_ids()
        env.api.client.post(
            "/assets/events", json={"asset_id": asset["id"], "extra": {"payload": a1_conf["event"]}}
        ).raise_for_status()
        env.wait_new_run_start(before)

        # disabled through the API: the next run start of A starts only a1's transfer
        r = env.plugin.patch(f"/subscriptions/{a2}", json={"enabled": False})
        assert r.status_code == 200, r.text
        env.known |= set(found)
        env.announce(producer, exp_a, 4)
        after = env.wait_transfers({exp_a}, 1)
        env.wait_run_starts_done()
        after = env.new_transfers(ours)
    finally:
        producer.close()
    assert sorted((c["subscription"], c["event"]["run"]) for c in after.values()) == [(a1, 4)]
    audit = env.plugin.get(f"/subscriptions/{a2}/audit").json()["data"]
    assert [(e["action"], e["who"]) for e in audit] == [("disable", "admin"), ("create", "admin")]
    print(f"whole scenario: {time.monotonic() - started:.1f} s")
