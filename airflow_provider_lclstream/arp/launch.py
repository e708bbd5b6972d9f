"""``lclstream-arp-launch``: run an LCLStream DAG in Airflow 3 from an LCLS ARP batch job.

ARP starts the job with ``EXPERIMENT``, ``RUN_NUM``, ``ARP_JOB_ID``, ``ARP_LOCATION``,
``JID_UPDATE_COUNTERS`` and ``Authorization`` in the environment. The launcher logs in to Airflow
(``POST /auth/token``), unpauses the DAG if needed, triggers a run with ``conf = {experiment,
run, arp_job_id, arp_location, ...--conf}``, prints every task state change, mirrors progress
into the Elog counters and exits with the run's outcome:

  0 success, 1 the run failed, 2 bad input, 3 timed out, 4 Airflow unreachable or refused us.

On timeout, SIGTERM (ARP "kill") or Ctrl-C the run is marked failed unless ``--keep-running``.
It talks HTTP only and never imports Airflow. Passwords, tokens and the ARP ``Authorization``
value are never printed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import quote

import httpx
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_incrementing

from airflow_provider_lclstream.arp.elog import ElogClient, ElogError
from airflow_provider_lclstream.exceptions import LCLStreamError
from airflow_provider_lclstream.transfer.layout import RETURN_VALUE, WATCH_TRANSFER

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from types import FrameType

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_TIMEOUT, EXIT_AIRFLOW = 0, 1, 2, 3, 4
DEFAULT_DAG_ID = "lclstream_transfer"
DEFAULT_URL = "http://127.0.0.1:8080"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_FINISHED_RUN = {"success", "failed"}
_TASK_DONE = {"success", "skipped", "failed", "upstream_failed", "removed"}
_TASK_BAD = {"failed", "upstream_failed"}


class LaunchError(LCLStreamError):
    """A failure with its exit code; the message is printed as is."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class _RetryPost(LCLStreamError):
    """Triggering got no answer or a server error: worth another try; ``error`` is what to
    raise when no try is left."""

    def __init__(self, message: str, error: LaunchError) -> None:
        super().__init__(message)
        self.error = error


@dataclass(frozen=True)
class ArpJob:
    """What ARP tells the job about itself, validated."""

    experiment: str
    run: int
    job_id: str | None = None
    location: str | None = None

    def conf(self) -> dict[str, Any]:
        conf: dict[str, Any] = {"experiment": self.experiment, "run": self.run}
        if self.job_id:
            conf["arp_job_id"] = self.job_id
        if self.location:
            conf["arp_location"] = self.location
        return conf


def _safe_name(value: str | None, what: str, env: str) -> str | None:
    if value is None or value == "":
        return None
    if not _NAME.match(value):
        raise LaunchError(
            f"{what} {value!r} (from ${env} or its flag) is not a plain name: use letters, digits, "
            "'_', '-' and '.' only (at most 64, starting with a letter or digit)",
            EXIT_USAGE,
        )
    return value


def arp_job_from(args: argparse.Namespace, environ: Mapping[str, str]) -> ArpJob:
    """Validate experiment/run/job id/location from flags, else the ARP environment."""
    experiment = _safe_name(
        args.experiment or environ.get("EXPERIMENT"), "experiment", "EXPERIMENT"
    )
    if experiment is None:
        raise LaunchError("no experiment: set $EXPERIMENT (ARP does) or --experiment", EXIT_USAGE)
    raw_run = args.run if args.run is not None else environ.get("RUN_NUM")
    if raw_run is None or str(raw_run).strip() == "":
        raise LaunchError("no run number: set $RUN_NUM (ARP does) or --run", EXIT_USAGE)
    text = str(raw_run).strip()
    if not text.isdigit() or len(text) > 9:
        raise LaunchError(
            f"run number {text!r} (from $RUN_NUM or --run) is not a non-negative integer",
            EXIT_USAGE,
        )
    return ArpJob(
        experiment=experiment,
        run=int(text),
        job_id=_safe_name(args.arp_job_id or environ.get("ARP_JOB_ID"), "ARP job id", "ARP_JOB_ID"),
        location=_safe_name(
            args.arp_location or environ.get("ARP_LOCATION"), "ARP location", "ARP_LOCATION"
        ),
    )


def parse_extra_conf(text: str | None, base: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``--conf`` JSON into the ARP conf; it may add keys, not change ARP's values."""
    if not text:
        return dict(base)
    try:
        extra = json.loads(text)
    except json.JSONDecodeError as err:
        raise LaunchError(f"--conf is not valid JSON: {err}", EXIT_USAGE) from None
    if not isinstance(extra, dict):
        raise LaunchError("--conf must be a JSON object", EXIT_USAGE)
    clash = sorted(k for k in base if k in extra and extra[k] != base[k])
    if clash:
        raise LaunchError(f"--conf may not change {', '.join(clash)} (set by ARP)", EXIT_USAGE)
    return {**extra, **base}


@dataclass
class AirflowClient:
    """The few Airflow 3 REST API v2 calls the launcher needs, logging in again on HTTP 401."""

    url: str
    username: str
    password: str = field(repr=False)
    timeout: float = 30.0
    verify: bool | str = True
    _http: httpx.Client = field(init=False, repr=False)
    _token: str | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._http = httpx.Client(
            base_url=self.url.rstrip("/"), timeout=self.timeout, verify=self.verify
        )

    def close(self) -> None:
        self._http.close()

    def login(self) -> None:
        try:
            r = self._http.post(
                "/auth/token", json={"username": self.username, "password": self.password}
            )
        except httpx.HTTPError as err:
            raise LaunchError(f"cannot reach Airflow at {self.url}: {err}", EXIT_AIRFLOW) from None
        if r.status_code in (401, 403):
            raise LaunchError(
                f"Airflow at {self.url} refused the login of user {self.username!r} "
                "(check --username/--password or LCLSTREAM_AIRFLOW_USER/PASSWORD)",
                EXIT_AIRFLOW,
            )
        if r.status_code >= 400 or "access_token" not in r.text:
            raise LaunchError(
                f"POST {self.url}/auth/token: HTTP {r.status_code}; is this an Airflow 3 "
                "api-server with the SimpleAuthManager (or another token endpoint)?",
                EXIT_AIRFLOW,
            )
        self._token = r.json()["access_token"]

    def request(self, method: str, path: str, json_body: Any = None) -> httpx.Response:
        """One API call; a 401 (token expired) logs in again once."""
        if self._token is None:
            self.login()
        for attempt in (1, 2):
            try:
                r = self._http.request(
                    method, path, json=json_body, headers={"Authorization": f"Bearer {self._token}"}
                )
            except httpx.HTTPError as err:
                raise LaunchError(f"{method} {self.url}{path}: {err}", EXIT_AIRFLOW) from None
            if r.status_code == 401 and attempt == 1:
                self.login()
                continue
            return r
        raise AssertionError("unreachable")

    def call(self, method: str, path: str, json_body: Any = None) -> dict[str, Any]:
        r = self.request(method, path, json_body)
        if r.status_code >= 400:
            raise LaunchError(
                f"{method} {self.url}{path}: HTTP {r.status_code}: {_detail(r)}", EXIT_AIRFLOW
            )
        return r.json() if r.content else {}  # type: ignore[no-any-return]


def _detail(r: httpx.Response) -> str:
    try:
        detail = r.json().get("detail", r.text)
    except ValueError:
        detail = r.text
    return str(detail)[:500]


def _say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class Launcher:
    """Trigger one DAG run and follow it to the end."""

    def __init__(
        self,
        client: AirflowClient,
        dag_id: str,
        conf: dict[str, Any],
        *,
        run_id: str | None,
        elog: ElogClient | None,
        poll_interval: float,
        dag_wait: float,
        max_poll_errors: int = 20,
    ) -> None:
        self.client = client
        self.dag_id = dag_id
        self.dag_path = f"/api/v2/dags/{quote(dag_id, safe='')}"
        self.conf = conf
        self.run_id = run_id
        self.elog = elog
        self.poll_interval = poll_interval
        self.dag_wait = dag_wait
        self.max_poll_errors = max_poll_errors
        self.task_states: dict[str, str] = {}
        self.run_state = "none"
        self._elog_warned = False

    def counters(self, **extra: Any) -> None:
        """Mirror progress into the Elog; a failure there is reported once, never fatal."""
        if self.elog is None:
            return
        done = sum(s in _TASK_DONE for s in self.task_states.values())
        counters: dict[str, Any] = {
            "Airflow DAG": self.dag_id,
            "Airflow run": self.run_id or "-",
            "State": self.run_state,
            "Tasks done": f"{done}/{len(self.task_states)}" if self.task_states else "-",
        }
        bad = [t for t, s in self.task_states.items() if s in _TASK_BAD]
        if bad:
            counters["Failed tasks"] = ", ".join(bad)
        counters.update(extra)
        try:
            self.elog.post_counters(counters)
        except (ElogError, ValueError) as err:
            if not self._elog_warned:
                _say(f"warning: cannot post Elog counters (continuing): {err}")
                self._elog_warned = True

    def ensure_dag(self) -> None:
        """Wait for the DAG to be parsed (``dag_wait`` s) and unpause it."""
        deadline = time.monotonic() + self.dag_wait
        while True:
            r = self.client.request("GET", self.dag_path)
            if r.status_code == 200:
                break
            if r.status_code != 404:
                raise LaunchError(
                    f"GET DAG {self.dag_id!r}: HTTP {r.status_code}: {_detail(r)}", EXIT_AIRFLOW
                )
            if time.monotonic() >= deadline:
                raise LaunchError(
                    f"DAG {self.dag_id!r} not found in Airflow at {self.client.url} after "
                    f"{self.dag_wait:.0f} s: is the DAG file in the DAGs folder, without import "
                    "errors (GET /api/v2/importErrors)?",
                    EXIT_AIRFLOW,
                )
            time.sleep(min(2.0, self.poll_interval))
        if r.json().get("is_paused"):
            self.client.call("PATCH", self.dag_path, {"is_paused": False})
            _say(f"unpaused DAG {self.dag_id}")

    def _post_run(self, body: dict[str, Any], attempts: int = 3) -> dict[str, Any]:
        """POST the run; with our own run id a retry after a server error is safe (a run that
        was created after all answers 409, and is then read back). ``tenacity`` retries, 2 s
        then 4 s apart."""
        path = f"{self.dag_path}/dagRuns"
        retrying = Retrying(
            stop=stop_after_attempt(attempts if "dag_run_id" in body else 1),
            wait=wait_incrementing(start=2.0, increment=2.0),
            retry=retry_if_exception_type(_RetryPost),
            before_sleep=lambda state: _say(
                f"warning: {state.outcome.exception() if state.outcome else ''}, "
                f"retrying ({state.attempt_number})"
            ),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    return self._post_run_once(path, body, attempt.retry_state.attempt_number)
        except _RetryPost as err:
            raise err.error from None
        raise AssertionError("unreachable")

    def _post_run_once(self, path: str, body: dict[str, Any], attempt: int) -> dict[str, Any]:
        try:
            r = self.client.request("POST", path, body)
        except LaunchError as err:  # no answer (timed out): the run may or may not exist
            raise _RetryPost(f"triggering got no answer ({err})", err) from None
        if r.status_code < 400:
            return r.json()  # type: ignore[no-any-return]
        if r.status_code == 409 and attempt > 1:  # an earlier try made the run after all
            return self.client.call("GET", f"{path}/{quote(str(body['dag_run_id']), safe='')}")
        error = LaunchError(
            f"POST {self.client.url}{path}: HTTP {r.status_code}: {_detail(r)}", EXIT_AIRFLOW
        )
        if r.status_code >= 500:
            raise _RetryPost(f"triggering failed with HTTP {r.status_code}", error)
        raise error

    def trigger(self) -> str:
        body: dict[str, Any] = {"logical_date": None, "conf": self.conf}
        if self.run_id:
            body["dag_run_id"] = self.run_id
        run = self._post_run(body)
        self.run_id = str(run["dag_run_id"])
        self.run_state = str(run.get("state") or "queued")
        _say(f"triggered DAG {self.dag_id} run {self.run_id} (state {self.run_state})")
        _say(f"conf: {json.dumps(self.conf, sort_keys=True)}")
        self.counters()
        return self.run_id

    def poll(self) -> str:
        """Fetch the run and its tasks; print what changed; return the run state."""
        run_path = f"{self.dag_path}/dagRuns/{quote(str(self.run_id), safe='')}"
        run = self.client.call("GET", run_path)
        tis = self.client.call("GET", f"{run_path}/taskInstances?limit=1000")
        changed = False
        for ti in sorted(tis.get("task_instances", []), key=lambda t: str(t.get("start_date"))):
            name = ti["task_id"] + (f"[{ti['map_index']}]" if ti.get("map_index", -1) >= 0 else "")
            state = ti.get("state") or "none"
            if self.task_states.get(name) != state:
                self.task_states[name] = state
                try_no = ti.get("try_number") or 0
                _say(f"task {name}: {state}" + (f" (try {try_no})" if try_no > 1 else ""))
                changed = True
        state = str(run.get("state") or "none")
        if state != self.run_state:
            self.run_state = state
            _say(f"run {self.run_id}: {state}")
            changed = True
        if changed:
            self.counters()
        return state

    def transfer_stats(self) -> dict[str, Any]:
        """The transfer's final numbers (XCom of ``watch_transfer``), if the DAG has that task."""
        if WATCH_TRANSFER not in self.task_states:
            return {}
        run_path = f"{self.dag_path}/dagRuns/{quote(str(self.run_id), safe='')}"
        xcom = f"taskInstances/{WATCH_TRANSFER}/xcomEntries/{RETURN_VALUE}"
        path = f"{run_path}/{xcom}?deserialize=true"
        try:
            value = self.client.call("GET", path).get("value")
        except LaunchError as err:
            _say(f"warning: cannot read the transfer's numbers: {err}")
            return {}
        return value if isinstance(value, dict) else {}

    def follow(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        errors = 0
        while True:
            try:
                state = self.poll()
                errors = 0
            except LaunchError as err:
                # An api-server restart must not end a day-long transfer: retry a while.
                errors += 1
                if err.code != EXIT_AIRFLOW or errors > self.max_poll_errors:
                    raise
                _say(f"warning: poll {errors}/{self.max_poll_errors} failed (retrying): {err}")
                state = self.run_state
            if state in _FINISHED_RUN:
                break
            if time.monotonic() >= deadline:
                raise LaunchError(
                    f"run {self.run_id} of DAG {self.dag_id} still {state} after {timeout:.0f} s "
                    "(--timeout)",
                    EXIT_TIMEOUT,
                )
            time.sleep(self.poll_interval)
        if state == "success":
            _say(f"run {self.run_id} succeeded")
            stats = self.transfer_stats()
            if stats:
                from airflow_provider_lclstream.transfer.report import elog_counters, summary_line

                _say(f"transfer: {summary_line(stats)}")
                self.counters(**elog_counters(stats))
            return EXIT_OK
        bad = [t for t, s in self.task_states.items() if s in _TASK_BAD] or ["(none reported)"]
        raise LaunchError(
            f"run {self.run_id} of DAG {self.dag_id} failed; failed tasks: {', '.join(bad)}; "
            f"see the task logs in Airflow at {self.client.url}/dags/{self.dag_id}/runs/"
            f"{self.run_id}",
            EXIT_FAILED,
        )

    def cancel(self, why: str) -> None:
        """Mark the run failed (best effort) so a killed ARP job leaves nothing running."""
        if not self.run_id or self.run_state in _FINISHED_RUN:
            return
        path = f"{self.dag_path}/dagRuns/{quote(self.run_id, safe='')}"
        try:
            self.client.call("PATCH", path, {"state": "failed"})
            self.run_state = "failed"
            _say(f"marked run {self.run_id} failed ({why})")
            self.counters(Note=f"cancelled: {why}")
        except LaunchError as err:
            _say(f"warning: could not mark run {self.run_id} failed: {err}")


def build_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    env = os.environ if environ is None else environ
    p = argparse.ArgumentParser(
        prog="lclstream-arp-launch",
        description=__doc__.split("\n\n")[0] + " Reads the ARP environment (EXPERIMENT, "
        "RUN_NUM, ARP_JOB_ID, ARP_LOCATION, JID_UPDATE_COUNTERS, Authorization); flags override.",
        epilog="Exit codes: 0 success, 1 run failed, 2 bad input, 3 timeout, 4 Airflow error.",
    )
    a = p.add_argument
    a(
        "--airflow-url",
        default=env.get("LCLSTREAM_AIRFLOW_URL", DEFAULT_URL),
        help="Airflow api-server base URL (env LCLSTREAM_AIRFLOW_URL; default %(default)s)",
    )
    a("--dag-id", default=DEFAULT_DAG_ID, help="DAG to trigger (default %(default)s)")
    a(
        "--username",
        default=env.get("LCLSTREAM_AIRFLOW_USER"),
        help="Airflow user (env LCLSTREAM_AIRFLOW_USER)",
    )
    a(
        "--password",
        default=None,
        help="Airflow password (prefer env LCLSTREAM_AIRFLOW_PASSWORD: flags show in `ps`)",
    )
    a("--conf", default=None, help="extra DAG run conf, a JSON object")
    a("--run-id", default=None, help="DAG run id (default arp__<experiment>__r<run>__<UTC time>)")
    a("--experiment", default=None, help="override $EXPERIMENT")
    a("--run", default=None, help="override $RUN_NUM")
    a("--arp-job-id", default=None, help="override $ARP_JOB_ID")
    a("--arp-location", default=None, help="override $ARP_LOCATION")
    a(
        "--timeout",
        type=float,
        default=24 * 3600.0,
        help="seconds to wait for the run to finish (default %(default).0f)",
    )
    a("--poll-interval", type=float, default=5.0, help="seconds between polls (default 5)")
    a(
        "--dag-wait",
        type=float,
        default=120.0,
        help="seconds to wait for the DAG to appear after parsing (default 120)",
    )
    a(
        "--keep-running",
        action="store_true",
        help="on timeout or SIGTERM leave the DAG run running instead of marking it failed",
    )
    a("--no-elog", action="store_true", help="do not post Elog counters")
    a("--insecure", action="store_true", help="do not verify TLS certificates")
    return p


def _fail(message: str, code: int) -> NoReturn:
    print(f"lclstream-arp-launch: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def _on_signal(signum: int, frame: FrameType | None) -> NoReturn:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    args = build_parser(env).parse_args(argv)
    try:
        job = arp_job_from(args, env)
        conf = parse_extra_conf(args.conf, job.conf())
        if not _NAME.match(args.dag_id):
            raise LaunchError(f"--dag-id {args.dag_id!r} is not a plain name", EXIT_USAGE)
        if args.poll_interval <= 0 or args.timeout <= 0:
            raise LaunchError("--poll-interval and --timeout must be positive", EXIT_USAGE)
        password = args.password or env.get("LCLSTREAM_AIRFLOW_PASSWORD")
        if not args.username or not password:
            raise LaunchError(
                "no Airflow credentials: set LCLSTREAM_AIRFLOW_USER and LCLSTREAM_AIRFLOW_PASSWORD "
                "(or --username/--password)",
                EXIT_USAGE,
            )
    except LaunchError as err:
        _fail(str(err), err.code)
    verify = not args.insecure
    elog = None
    if not args.no_elog and env.get("JID_UPDATE_COUNTERS"):
        elog = ElogClient.from_env(env, verify=verify, retries=1)
    run_id = args.run_id or (
        f"arp__{job.experiment}__r{job.run:04d}__{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    )
    client = AirflowClient(args.airflow_url, args.username, password, verify=verify)
    launcher = Launcher(
        client, args.dag_id, conf, run_id=run_id, elog=elog,
        poll_interval=args.poll_interval, dag_wait=args.dag_wait,
    )  # fmt: skip
    _say(f"experiment {job.experiment} run {job.run}: DAG {args.dag_id} at {args.airflow_url}")
    previous = signal.signal(signal.SIGTERM, _on_signal)
    try:
        launcher.ensure_dag()
        launcher.trigger()
        return launcher.follow(args.timeout)
    except LaunchError as err:
        if err.code == EXIT_TIMEOUT and not args.keep_running:
            launcher.cancel("timeout")
        elif launcher.run_state not in _FINISHED_RUN:
            launcher.counters(Note=str(err)[:200])
        _fail(str(err), err.code)
    except KeyboardInterrupt as interrupt:
        why = str(interrupt) or "SIGINT"
        if not args.keep_running:
            launcher.cancel(f"launcher got {why}")
        _fail(f"interrupted by {why}", 128 + (15 if why == "SIGTERM" else 2))
    finally:
        signal.signal(signal.SIGTERM, previous)
        client.close()


if __name__ == "__main__":
    sys.exit(main())
