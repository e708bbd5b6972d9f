"""Job specs for the three roles of a transfer: buffer, streamer (MPI), consumers.

Every value that reaches a script is either validated (TransferRequest) or quoted with
``shell_quote``; the streamer's config travels inside its script as a quoted here-document, so
a job needs no shared file system with the Airflow worker.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from airflow_provider_lclstream.config.job import JobSpec, ResourceSpec, shell_join, shell_quote
from airflow_provider_lclstream.config.loader import dump_flat
from airflow_provider_lclstream.streamer.tally import TALLY_DIR_ENV

if TYPE_CHECKING:
    from airflow_provider_lclstream.config.streamer import StreamerConfig
    from airflow_provider_lclstream.config.transfer import TransferRequest

CONFIG_END = "LCLSTREAM_CONFIG_END"
TALLY_DIR = "lclstreamer-tally"
"""Where the streamer job's ranks keep their running counts (``streamer/tally.py``)."""
TALLY_WAIT_S = 2
"""How long a failed or cancelled streamer job waits for every rank's final tally (within
SLURM's ``KillWait``, 30 s by default: the SIGKILL after a cancel's SIGTERM)."""
# Settings of the worker's environment that the streamer job needs too (a SLURM job gets only
# the spec's environment).
PASSED_ENVIRONMENT = ("LCLSTREAM_PSANA_OFFLINE", "LCLSTREAM_LOGBOOK_URL")


def tool(name: str, bin_dir: str | None = None) -> str:
    """The command for one of our tools: in ``bin_dir``, next to this Python, or on PATH."""
    if bin_dir:
        return str(Path(bin_dir) / name)
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    return shutil.which(name) or name


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class BufferEndpoints:
    """Where a buffer listens (all interfaces) and how others reach it (``host``: the address of
    the node its job runs on, learned from the job backend once the job started)."""

    host: str
    input_port: int
    output_port: int
    metrics_port: int

    @classmethod
    def pick(
        cls, host: str | None = "127.0.0.1", ports: tuple[int, int, int] | None = None
    ) -> BufferEndpoints:
        """Given ports, or three free ones on this machine (right for the local backend)."""
        chosen = ports or (free_port(), free_port(), free_port())
        return cls(host or "127.0.0.1", *chosen)

    @property
    def input_url(self) -> str:
        return f"tcp://{self.host}:{self.input_port}"

    @property
    def output_url(self) -> str:
        return f"tcp://{self.host}:{self.output_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}"

    @property
    def ports(self) -> tuple[int, int, int]:
        return (self.input_port, self.output_port, self.metrics_port)

    def urls(self) -> dict[str, Any]:
        return {
            "input_url": self.input_url,
            "output_url": self.output_url,
            "metrics_url": self.metrics_url,
            **asdict(self),
        }


def with_buffer_ports(request: TransferRequest) -> TransferRequest:
    """The request with its buffers' ports fixed (three free ones here per buffer when it names
    none), so every try of the transfer uses the same ones."""
    if request.buffer_ports is not None:
        return request
    ports: list[int] = []
    while len(ports) < 3 * request.buffers:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return request.model_copy(update={"buffer_ports": tuple(ports)})


def buffer_ports(request: TransferRequest, index: int) -> tuple[int, int, int] | None:
    """The input, output and metrics port of buffer ``index``; None when the request names none."""
    if request.buffer_ports is None:
        return None
    start = 3 * index
    first, second, third = request.buffer_ports[start : start + 3]
    return (first, second, third)


def buffer_of(index: int, buffers: int) -> int:
    """The buffer of streamer rank or consumer ``index``: ``index % buffers``."""
    return index % buffers


def producers_of(buffer: int, ranks: int, buffers: int) -> int:
    """How many streamer ranks send to ``buffer`` (ranks r with ``r % buffers == buffer``)."""
    return len(range(buffer, ranks, buffers))


def buffer_job(
    request: TransferRequest,
    endpoints: BufferEndpoints,
    *,
    capacity_bytes: str = "1GB",
    bin_dir: str | None = None,
    index: int = 0,
) -> JobSpec:
    """A persistent buffer for one transfer (buffer ``index`` of ``request.buffers``: it expects
    the ranks that send to it): it stays up after the stream (so its final report
    can be read) until the transfer's teardown stops it.

    With the request's ``addr`` the buffer's output dials that address (the user's own
    receiver) instead of listening for consumer jobs. The request's ``buffer_host`` pins the
    job to that node (the ``nodelist`` attribute: sbatch's ``--nodelist``, slurmrestd's
    ``required_nodes``)."""
    args = buffer_args(request, endpoints, capacity_bytes=capacity_bytes, index=index)
    command = [tool("lclstream-buffer", bin_dir), *args]
    return JobSpec(
        name=f"buffer{index if request.buffers > 1 else ''}-{request.label}",
        script="#!/bin/bash\nexec " + shell_join(command) + "\n",
        resources=ResourceSpec(duration=BUFFER_MINUTES, process_count=1, exclusive_node_use=False),
        attributes={
            **request.buffer.attributes,
            **({"nodelist": request.buffer_pin} if request.buffer_pin else {}),
        },
    )


BUFFER_MINUTES = 24 * 60
"""A buffer job's time limit: it stays up until its transfer's teardown stops it."""


def buffer_args(
    request: TransferRequest, endpoints: BufferEndpoints, *, capacity_bytes: str, index: int
) -> list[str]:
    """``lclstream-buffer``'s arguments for buffer ``index`` of ``request`` (:func:`buffer_job`;
    a claimed standby buffer gets the same)."""
    output = ["--output", f"tcp://0.0.0.0:{endpoints.output_port}"]
    if request.addr:
        output = ["--output", request.addr, "--dial-output"]
    return [
        "--input", f"tcp://0.0.0.0:{endpoints.input_port}",
        *output,
        "--input-transport", request.library,
        "--output-transport", request.library,
        "--expect-producers", str(producers_of(index, request.ranks, request.buffers)),
        "--metrics", f"0.0.0.0:{endpoints.metrics_port}",
        "--capacity-bytes", capacity_bytes,
        "--drain-timeout", "30",
        "--persistent",
    ]  # fmt: skip


def standby_buffer_job(
    name: str,
    *,
    idle_timeout_s: float = 600,
    duration_min: int = BUFFER_MINUTES,
    attributes: dict[str, str] | None = None,
    bin_dir: str | None = None,
) -> JobSpec:
    """A warm buffer: ``lclstream-buffer --standby tcp://0.0.0.0:0`` waiting ``idle_timeout_s``
    for one transfer's arguments (:func:`buffer_args`), then serving it as :func:`buffer_job`'s
    buffer would. Its time limit covers the wait and at least a fresh buffer's."""
    command = [tool("lclstream-buffer", bin_dir), "--standby", "tcp://0.0.0.0:0",
               "--standby-timeout", f"{idle_timeout_s:g}"]  # fmt: skip
    return JobSpec(
        name=name,
        script="#!/bin/bash\nexec " + shell_join(command) + "\n",
        resources=ResourceSpec(
            duration=max(duration_min, BUFFER_MINUTES) + int(idle_timeout_s // 60) + 1,
            process_count=1,
            exclusive_node_use=False,
        ),
        attributes=dict(attributes or {}),
    )


def render_config(config: StreamerConfig) -> str:
    return yaml.safe_dump(dump_flat(config), sort_keys=False)


def streamer_num_events(request: TransferRequest) -> int | None:
    """The ``--num-events`` of the request's streamer (None: every event)."""
    return request.events if request.events is not None and not request.synthetic else None


def _launch(ranks: int, launcher: str, bin_dir: str | None) -> list[str]:
    if launcher == "srun":
        return ["srun", "-n", str(ranks)]
    return [tool("mpiexec", bin_dir), "-n", str(ranks)]


def _streamer_script(
    command: list[str], ranks: int, checks: list[str], head: str, bin_dir: str | None
) -> str:
    """The streamer job's script around ``command`` (the launcher and its ranks): the ranks'
    tally directory (one per job: jobs may share a working directory), the SIGTERM trap, and
    after a failed launcher the ``checks`` and every rank's tally."""
    tally = [tool("python", bin_dir), "-m", "airflow_provider_lclstream.streamer.tally",
             "--wait", str(TALLY_WAIT_S)]  # fmt: skip
    fallback = [*checks, f'{shell_join(tally)} "${TALLY_DIR_ENV}" {ranks} || true']
    run_line = shell_join(command) + f" || {{ rc=$?; {'; '.join(fallback)}; exit $rc; }}"
    tally_dir = f"{TALLY_DIR}-${{SLURM_JOB_ID:-${{LCLSTREAM_JOB_ID:-$$}}}}"
    return (
        "#!/bin/bash\nset -euo pipefail\n"
        + head
        + f'export {TALLY_DIR_ENV}="$PWD/{tally_dir}"; rm -rf "${TALLY_DIR_ENV}"\n'
        # cancelled (SIGTERM to every process of the job): the shell outlives the launcher and
        # prints the ranks' counts (a trapped signal is reset to its default in the children)
        + "trap 'echo \"lclstreamer job: SIGTERM: the counts of the ranks follow\" >&2' TERM\n"
        + run_line
        + "\n"
    )


def _streamer_environment(logbook_url: str | None) -> dict[str, str]:
    return {
        **{k: os.environ[k] for k in PASSED_ENVIRONMENT if k in os.environ},
        **({"LCLSTREAM_LOGBOOK_URL": logbook_url} if logbook_url else {}),
    }


def streamer_job(
    request: TransferRequest,
    config: StreamerConfig,
    *,
    launcher: str = "mpiexec",
    bin_dir: str | None = None,
    duration_min: int = 60,
    logbook_url: str | None = None,
) -> JobSpec:
    """``mpiexec -n RANKS lclstreamer -c CONFIG`` (or ``srun``), the config inlined.

    ``logbook_url`` (the caller passes ``[lclstream] logbook_url``) reaches psana2 in the job as
    ``LCLSTREAM_LOGBOOK_URL``. For a psana2 run in ``xtc_dir``, a failed ``mpiexec`` is followed
    by a walk of the run's files that names a corrupt dgram (file, offset) in the job's log:
    psana dies in C on a corrupt big-data dgram and cannot say which one it was. Every failed
    ``mpiexec`` is followed by each rank's tally (``streamer/tally.py``, kept in
    ``./lclstreamer-tally-JOBID``): each rank's summary as it wrote it there when it ended or
    got SIGTERM, or, for a rank killed outright, the count of every event it read. The job's
    shell traps SIGTERM so that a cancelled job prints them too: a rank's own summary line can
    be lost on the way through ``srun``, which SIGKILLs the ranks when it is cancelled."""
    text = render_config(config)
    if CONFIG_END in text:
        raise ValueError("the streamer config contains the here-document terminator")
    command = [*_launch(request.ranks, launcher, bin_dir), tool("lclstreamer", bin_dir),
               "-c", "lclstreamer.yaml"]  # fmt: skip
    num_events = streamer_num_events(request)
    if num_events is not None:
        command += ["--num-events", str(num_events)]
    checks = []
    if request.exp is not None and request.xtc_dir and request.psana_version == 2:
        check = [tool("python", bin_dir), "-m", "airflow_provider_lclstream.streamer.xtc2",
                 request.xtc_dir, request.exp, str(request.run)]  # fmt: skip
        checks.append(f"{shell_join(check)} >&2 || true")
    head = f"cat > lclstreamer.yaml <<'{CONFIG_END}'\n{text}{CONFIG_END}\n"
    return JobSpec(
        name=f"streamer-{request.label}",
        script=_streamer_script(command, request.ranks, checks, head, bin_dir),
        environment=_streamer_environment(logbook_url),
        resources=ResourceSpec(
            duration=duration_min, process_count=request.ranks, exclusive_node_use=False
        ),
        attributes=request.streamer.attributes,
    )


def standby_streamer_job(
    name: str,
    ranks: int,
    *,
    launcher: str = "mpiexec",
    idle_timeout_s: float = 600,
    duration_min: int = 60,
    attributes: dict[str, str] | None = None,
    bin_dir: str | None = None,
    logbook_url: str | None = None,
) -> JobSpec:
    """A warm streamer: ``mpiexec -n RANKS lclstreamer --standby tcp://0.0.0.0:0`` waiting
    ``idle_timeout_s`` for one run (``streamer/standby.py``), then running it as
    :func:`streamer_job` would (same tally and SIGTERM handling; the xtc2 walk after a failure
    is not done: the run is not known when the job starts). Its time limit covers the wait and
    ``duration_min`` of streaming."""
    command = [*_launch(ranks, launcher, bin_dir), tool("lclstreamer", bin_dir),
               "--standby", "tcp://0.0.0.0:0", "--idle-timeout", f"{idle_timeout_s:g}"]  # fmt: skip
    return JobSpec(
        name=name,
        script=_streamer_script(command, ranks, [], "", bin_dir),
        environment=_streamer_environment(logbook_url),
        resources=ResourceSpec(
            duration=duration_min + int(idle_timeout_s // 60) + 1,
            process_count=ranks,
            exclusive_node_use=False,
        ),
        attributes=dict(attributes or {}),
    )


def receive_args(
    request: TransferRequest, output_url: str, index: int, *, timeout_s: float = 600
) -> list[str]:
    """``lclstream-receive``'s arguments for consumer ``index`` of ``request``
    (:func:`consumer_job` without a consumer command; a claimed standby consumer gets the
    same)."""
    out = Path(request.output_dir or "lclstream-output") / request.label / f"consumer-{index}"
    return [
        "--url", output_url,
        "--dial",
        "--transport", request.library,
        "--expect-producers", "1",
        "--out", str(out),
        "--prefix", f"c{index}",
        "--timeout", str(timeout_s),
        "--quiet",
    ]  # fmt: skip


def standby_consumer_job(
    name: str,
    *,
    idle_timeout_s: float = 600,
    duration_min: int = 60,
    attributes: dict[str, str] | None = None,
    bin_dir: str | None = None,
) -> JobSpec:
    """A warm consumer: ``lclstream-receive --standby tcp://0.0.0.0:0`` waiting
    ``idle_timeout_s`` for one consumer's arguments (:func:`receive_args`), then receiving as
    :func:`consumer_job`'s ``lclstream-receive`` would. Its time limit covers the wait and
    ``duration_min`` of receiving (at least a fresh consumer job's)."""
    command = [tool("lclstream-receive", bin_dir), "--standby", "tcp://0.0.0.0:0",
               "--standby-timeout", f"{idle_timeout_s:g}"]  # fmt: skip
    return JobSpec(
        name=name,
        script="#!/bin/bash\nexec " + shell_join(command) + "\n",
        resources=ResourceSpec(
            duration=max(duration_min, CONSUMER_MINUTES) + int(idle_timeout_s // 60) + 1,
            process_count=1,
            exclusive_node_use=False,
        ),
        attributes=dict(attributes or {}),
    )


CONSUMER_MINUTES = 20
"""A fresh consumer job's time limit with the default 600 s receive timeout."""


def consumer_job(
    request: TransferRequest,
    output_url: str,
    index: int,
    *,
    bin_dir: str | None = None,
    timeout_s: float = 600,
) -> JobSpec:
    """The user's consumer command (``$LCLSTREAM_URL`` holds the buffer's output), or
    ``lclstream-receive`` writing one HDF5 file per message."""
    environment = {"LCLSTREAM_URL": output_url, "LCLSTREAM_TRANSPORT": request.library}
    if request.consumer_command:
        script = "#!/bin/bash\nset -euo pipefail\n" + request.consumer_command + "\n"
    else:
        args = receive_args(request, output_url, index, timeout_s=timeout_s)
        command = [tool("lclstream-receive", bin_dir), *args]
        script = "#!/bin/bash\nexec " + shell_join(command) + "\n"
    return JobSpec(
        name=f"consumer{index}-{request.label}",
        script=script,
        environment=environment,
        resources=ResourceSpec(
            duration=max(1, int(timeout_s // 60) + 10), process_count=1, exclusive_node_use=False
        ),
        attributes=request.consumer.attributes,
    )


__all__ = [
    "BufferEndpoints",
    "with_buffer_ports",
    "buffer_of",
    "buffer_ports",
    "producers_of",
    "BUFFER_MINUTES",
    "buffer_args",
    "buffer_job",
    "consumer_job",
    "render_config",
    "shell_quote",
    "standby_buffer_job",
    "standby_consumer_job",
    "receive_args",
    "standby_streamer_job",
    "streamer_job",
    "streamer_num_events",
    "tool",
]
