"""Process that runs one local job and records its exit code (standard library only).

Started by :class:`~airflow_provider_lclstream.backends.local.LocalBackend` as
``python -I _local_runner.py JOBDIR DURATION_S GRACE_S CMD...`` in a new session, with the job's
environment, working directory and log file as stdout/stderr. It runs CMD in its own process
group, writes ``started.json``, enforces the walltime (writes ``timeout``, then SIGTERM and
SIGKILL to the group) and writes ``result.json`` when CMD ends. SIGTERM/SIGINT/SIGHUP to the
runner are ignored so it can still record the exit code of a cancelled job.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time


def _write_json(path: str, data: dict) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as handle:
        json.dump(data, handle)
    os.replace(tmp, path)


def _kill_group(sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(os.getpgid(0), sig)


def main(argv: list[str]) -> int:
    jobdir, duration_s, grace_s, cmd = argv[1], float(argv[2]), float(argv[3]), argv[4:]
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    started = time.time()
    try:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            # the job gets default signal handling back
            preexec_fn=lambda: [
                signal.signal(s, signal.SIG_DFL)
                for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
            ],
        )
    except OSError as err:
        print(f"lclstream local runner: cannot start {cmd!r}: {err}", file=sys.stderr, flush=True)
        _write_json(
            os.path.join(jobdir, "result.json"),
            {"exit_code": 127, "returncode": 127, "finished": time.time(), "error": str(err)},
        )
        return 127
    _write_json(os.path.join(jobdir, "started.json"), {"pid": proc.pid, "started": started})
    deadline = started + duration_s if duration_s > 0 else None
    while True:
        timeout = None if deadline is None else max(0.0, deadline - time.time())
        try:
            proc.wait(timeout=timeout)
            break
        except subprocess.TimeoutExpired:
            with open(os.path.join(jobdir, "timeout"), "w") as handle:
                handle.write(str(time.time()))
            print(
                f"lclstream local runner: walltime of {duration_s:.0f} s reached, stopping the job",
                file=sys.stderr,
                flush=True,
            )
            _kill_group(signal.SIGTERM)
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                _write_json(
                    os.path.join(jobdir, "result.json"),
                    {"exit_code": 137, "returncode": -9, "finished": time.time()},
                )
                _kill_group(signal.SIGKILL)  # kills this runner too
            break
    code = proc.returncode
    exit_code = code if code >= 0 else 128 - code
    _write_json(
        os.path.join(jobdir, "result.json"),
        {"exit_code": exit_code, "returncode": code, "finished": time.time()},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
