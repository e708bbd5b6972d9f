"""A transfer across four SLURM nodes, each a network namespace of this host (slurm-multi.sh).

Everything goes through SLURM (``sbatch``): the buffer pinned to ``lcls-n1``, whose address the
test learns from SLURM (the job's node list, then that node's ``NodeAddr`` from slurmrestd); an
``lclstreamer`` job whose two MPI ranks ``srun --mpi=pmi2`` starts on ``lcls-n2`` and
``lcls-n3`` (MPICH's OFI netmod on libfabric's TCP provider, on the nodes' ``eth0``), dialing the
buffer; two ``lclstream-receive`` consumers on ``lcls-n4``, dialing it too. Each namespace
reaches only 198.18.0.0/24, so every byte between nodes crosses the bridge ``lcls-br0``.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import STATE_DIR

pytestmark = [pytest.mark.multihost, pytest.mark.mpi]

BIN = Path(sys.executable).parent
ENV_FILE = STATE_DIR / "slurm-multi" / "env.sh"  # written by scripts/services/slurm-multi.sh
RANKS, EVENTS_PER_RANK, BATCH = 2, 40, 5
MESSAGES_PER_RANK = EVENTS_PER_RANK // BATCH
JOB_TIMEOUT = 90.0
# rank 0 prints MPICH's choice with MPIR_CVAR_DEBUG_SUMMARY=1: the provider and its network.
MPI_NETWORK_LINE = "libfabric provider: tcp - 198.18.0.0/24"


def read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        if line.startswith("export ") and "=" in line:
            key, _, value = line.removeprefix("export ").partition("=")
            env[key.strip()] = value.strip().strip('"')
    return env


class Cluster:
    """The four-node cluster's commands and REST API, and the jobs a test submitted."""

    def __init__(self, env_file: Path, work: Path) -> None:
        self.settings = read_env_file(env_file)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        self.env = {**env, "SLURM_CONF": self.settings["SLURM_CONF"]}
        self.work = work
        self.jobs: dict[str, str] = {}  # name -> job id

    def run(self, *cmd: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            cmd, input=stdin, capture_output=True, text=True, timeout=30, env=self.env
        )
        assert done.returncode == 0, f"{' '.join(cmd)}: rc={done.returncode}: {done.stderr}"
        return done.stdout

    def submit(self, name: str, script: str, *options: str) -> str:
        """``sbatch`` a bash script as job ``name``; its output goes to ``work/<name>.out``."""
        path = self.work / f"{name}.sh"
        path.write_text("#!/bin/bash\nset -u\n" + script)
        job_id = self.run(
            "sbatch", "--parsable", f"--job-name=mh-{name}", f"--output={self.output(name)}",
            f"--chdir={self.work}", "--time=5", "--export=ALL", *options, str(path),
        ).strip().split(";")[0]  # fmt: skip
        self.jobs[name] = job_id
        return job_id

    def output(self, name: str) -> Path:
        return self.work / f"{name}.out"

    def job(self, name: str) -> dict[str, str]:
        text = self.run("scontrol", "show", "job", "-o", self.jobs[name])
        return dict(re.findall(r"(\w+)=(\S*)", text))

    def wait_state(self, name: str, states: set[str], timeout: float = JOB_TIMEOUT) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            info = self.job(name)
            if info["JobState"] in states:
                return info
            if info["JobState"] in {"FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "COMPLETED"}:
                pytest.fail(f"job {name} ({self.jobs[name]}) is {info['JobState']}:\n{self.logs()}")
            if time.monotonic() > deadline:
                pytest.fail(f"job {name} not {states} in {timeout} s ({info['JobState']}):\n"
                            f"{self.logs()}")  # fmt: skip
            time.sleep(0.2)

    def node_address(self, node: str) -> str:
        """The node's address as slurmrestd reports it (its ``NodeAddr``)."""
        token = self.run("scontrol", "token", "username=root", "lifespan=300").strip()
        url = self.settings["LCLSTREAM_MULTI_SLURMRESTD_URL"]
        api = self.settings["LCLSTREAM_MULTI_SLURMRESTD_API"]
        reply = httpx.get(
            f"{url}/slurm/{api}/node/{node}",
            headers={"X-SLURM-USER-NAME": "root", "X-SLURM-USER-TOKEN": token.split("=", 1)[1]},
            timeout=10,
        )
        reply.raise_for_status()
        (record,) = reply.json()["nodes"]
        return str(record["address"])

    def logs(self) -> str:
        return "\n".join(
            f"--- {name} ({job_id}):\n{self.output(name).read_text()[-3000:]}"
            for name, job_id in self.jobs.items()
            if self.output(name).exists()
        )

    def cancel_all(self) -> None:
        if self.jobs:
            subprocess.run(["scancel", *self.jobs.values()], env=self.env, timeout=30, check=False)


@pytest.fixture
def cluster(slurm_multi_service: None, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(ENV_FILE, tmp_path)
    try:
        yield c
    finally:
        c.cancel_all()  # a no-op for jobs that ended


def buffer_stats(url: str) -> dict[str, Any] | None:
    try:
        return httpx.get(f"{url}/stats", timeout=2).json()
    except httpx.HTTPError:
        return None  # not listening yet


def wait_for(what: str, check: Any, cluster: Cluster, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout} s:\n{cluster.logs()}")
        time.sleep(0.2)
    return result


def host_of(producer: str) -> str:
    """``host:pid/rN`` (protocol.producer_id) -> host."""
    return producer.split(":", 1)[0]


def test_buffer_streamer_consumers_on_four_nodes(cluster: Cluster) -> None:
    port = random.randrange(20000, 29000, 3)  # in this cluster's namespaces only
    in_port, out_port, metrics_port = port, port + 1, port + 2
    work = cluster.work

    # (a) the buffer, pinned to node 1; its address comes from SLURM
    cluster.submit(
        "buffer",
        f"exec {BIN}/lclstream-buffer --input tcp://0.0.0.0:{in_port} "
        f"--output tcp://0.0.0.0:{out_port} --input-transport nng --output-transport nng "
        f"--expect-producers {RANKS} --metrics 0.0.0.0:{metrics_port} "
        f"--report {work}/buffer-report.json --idle-timeout 80 --log-interval 5\n",
        "--nodes=1", "--ntasks=1", "--nodelist=lcls-n1",
    )  # fmt: skip
    info = cluster.wait_state("buffer", {"RUNNING"})
    assert info["NodeList"] == "lcls-n1"
    address = cluster.node_address(info["NodeList"])
    assert address == "198.18.0.11"
    metrics = f"http://{address}:{metrics_port}"
    wait_for("the buffer did not listen", lambda: buffer_stats(metrics), cluster)

    # (c) two consumers on node 4, dialing the buffer
    receive = (
        f"{BIN}/lclstream-receive --url tcp://{address}:{out_port} --dial --transport nng "
        "--expect-producers 1 --timeout 80 --quiet"
    )
    cluster.submit(
        "consumers",
        f"{receive} --out {work}/c0 >{work}/c0.json & a=$!\n"
        f"{receive} --out {work}/c1 >{work}/c1.json & b=$!\n"
        "rc=0; wait $a || rc=1; wait $b || rc=1; exit $rc\n",
        "--nodes=1", "--ntasks=1", "--nodelist=lcls-n4",
    )  # fmt: skip
    wait_for(
        "the consumers did not connect",
        lambda: (buffer_stats(metrics) or {}).get("consumers", {}).get("connected", 0) >= 2,
        cluster,
    )

    # (b) the streamer: one MPI rank on each of nodes 2 and 3, dialing the buffer
    config = {
        "event_source": {
            "type": "InternalEventSource",
            "number_of_events_to_generate": EVENTS_PER_RANK,
        },
        "data_sources": {"detector_data": {"type": "SyntheticDetector", "shape": [2, 32, 32]}},
        "processing_pipeline": {"type": "BatchProcessingPipeline", "batch_size": BATCH},
        "data_serializer": {"type": "HDF5BinarySerializer", "fields": {"detector_data": "/data"}},
        "data_handlers": [
            {
                "type": "BinaryDataStreamingDataHandler",
                "urls": [f"tcp://{address}:{in_port}"],
                "library": "nng",
                "role": "client",
            }
        ],
    }
    (work / "streamer.yaml").write_text(yaml.safe_dump(config))
    cluster.submit(
        "streamer",
        "export MPIR_CVAR_CH4_NETMOD=ofi FI_PROVIDER=tcp FI_TCP_IFACE=eth0 "
        "MPIR_CVAR_DEBUG_SUMMARY=1\n"
        f"exec srun --mpi=pmi2 {BIN}/lclstreamer -c {work}/streamer.yaml\n",
        f"--nodes={RANKS}", "--ntasks-per-node=1", "--nodelist=lcls-n2,lcls-n3",
    )  # fmt: skip

    done = {name: cluster.wait_state(name, {"COMPLETED"}) for name in cluster.jobs}
    logs = cluster.logs()
    assert {name: d["ExitCode"] for name, d in done.items()} == dict.fromkeys(done, "0:0"), logs
    assert done["streamer"]["NodeList"] == "lcls-n[2-3]", logs
    assert done["consumers"]["NodeList"] == "lcls-n4", logs

    # the ranks ran on two nodes and MPI between them used the namespaces' network
    streamer_out = cluster.output("streamer").read_text()
    assert MPI_NETWORK_LINE in streamer_out, logs
    total_lines = [line for line in streamer_out.splitlines() if line.startswith("TOTAL ")]
    assert len(total_lines) == 1, logs
    total = json.loads(total_lines[0].removeprefix("TOTAL "))
    assert total["ranks"] == RANKS and total["errors"] == [], total
    assert total["per_rank_events"] == [EVENTS_PER_RANK] * RANKS, total
    assert total["messages"] == RANKS * MESSAGES_PER_RANK, total
    ranks = [json.loads(line) for line in streamer_out.splitlines() if line.startswith('{"rank"')]
    assert {r["rank"]: host_of(r["producer"]) for r in ranks} == {0: "lcls-n2", 1: "lcls-n3"}

    # the buffer saw both producers end, one per node, and passed on all it took
    report = json.loads((work / "buffer-report.json").read_text())
    assert report["state"] == "done" and report["producers"]["ended"] == RANKS, report
    producers = report["producers"]["per_producer"]
    assert {host_of(p) for p in producers} == {"lcls-n2", "lcls-n3"}, producers
    assert report["messages_in"] == report["messages_out"] == total["messages"], report
    consumers = report["consumers"]["gone"]  # both came from node 4's address, took their share
    assert [c["address"].split(":")[0] for c in consumers] == ["198.18.0.14"] * 2, consumers
    assert not any(c["lost_mid_stream"] for c in consumers), consumers

    # every message, hence every event, reached exactly one consumer on node 4
    summaries = [json.loads((work / f"c{i}.json").read_text().splitlines()[-1]) for i in (0, 1)]
    assert all(s["ok"] and s["eos"] for s in summaries), summaries
    assert sum(s["events"] for s in summaries) == RANKS * EVENTS_PER_RANK, summaries
    records = [
        json.loads(line)
        for i in (0, 1)
        for line in (work / f"c{i}" / "msg_messages.jsonl").read_text().splitlines()
    ]
    seen = Counter((r["producer"], r["seq"]) for r in records)
    assert max(seen.values()) == 1, seen  # no message twice
    by_host: dict[str, set[int]] = {}
    for producer, seq in seen:
        by_host.setdefault(host_of(producer), set()).add(seq)
    expected_seqs = set(range(MESSAGES_PER_RANK))
    assert by_host == {"lcls-n2": expected_seqs, "lcls-n3": expected_seqs}, by_host
    assert sum(r["events"] for r in records) == RANKS * EVENTS_PER_RANK
