"""The buffer: producers -> bounded FIFO -> consumers, with end-of-stream accounting.

One thread runs the data path, moving messages without looking inside them except for the
end-of-stream prefix. It reads the input only while the FIFO has room, so a full FIFO
back-pressures producers through the transport. How it waits depends on what is queued (#18):
a pump of blocking receives and sends while consumers keep up (``_pump``), blocking sends from
the FIFO with read-ahead while they do not (``_send_waiting``), and a poll of both sides while no
consumer takes data or for NNG output (``_poll_once``); docs/buffer.md has the rules.

A stream ends when the expected producers have ended (or the idle timeout or a stop request
cuts it short) and the FIFO is drained. Then the buffer sends its own ``EndOfStream`` once per
connected consumer. PUSH round-robin cannot address a consumer, and a busy consumer's pipe may be
skipped, so one consumer can get two copies and another none: the buffer therefore waits for the
consumers to hang up and sends one more copy per consumer still connected every
``EOS_RESEND_S``, until none is left or ``drain_timeout_s`` passes. Every copy carries the same
``extra.stream_id``; receivers (and downstream buffers) count an EOS once per
``(producer, stream_id)``. The buffer's record takes the stream's own shape: a Simplon ``c``
stop when its producers' records (or, without records, its data) are Simplon, else HDF5, so an
upstream consumer behind the buffer reads it like the producers' own.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

import zmq

from airflow_provider_lclstream.buffer.accounting import StreamAccounting
from airflow_provider_lclstream.buffer.callbacks import CallbackSender
from airflow_provider_lclstream.buffer.config import parse_hostport
from airflow_provider_lclstream.buffer.consumers import ConsumerTable
from airflow_provider_lclstream.buffer.endpoints import NngPayload, open_endpoint
from airflow_provider_lclstream.buffer.fifo import BoundedFifo, payload_size
from airflow_provider_lclstream.buffer.metrics import MetricsServer
from airflow_provider_lclstream.buffer.stats import (
    BufferStats,
    RateMeter,
    StreamReport,
    build_stats,
    progress_line,
)
from airflow_provider_lclstream.exceptions import ProtocolError
from airflow_provider_lclstream.protocol import (
    EOS_MAGIC,
    EXIT_ENDED_BY_IDLE,
    SIMPLON_EOS_PREFIX,
    EndOfStream,
    is_end_of_stream,
)

if TYPE_CHECKING:
    from airflow_provider_lclstream.buffer.config import BufferConfig

log = logging.getLogger("lclstream.buffer")

POLL_S = 0.05
PEER_S = 0.02
"""While data moves, peer events are read at most this often (else whenever they come)."""
BATCH = 512
SEND_WAIT_S = 0.01
"""The longest the loop waits in a blocking send before it polls the input again."""
ABSORB_WAIT_S = 0.002
"""A send that waited this long says the consumers are slower than the producers: the loop
then reads what the input holds at once (into the FIFO) instead of at its next receive."""
_EOS_FIRST_BYTES = frozenset({EOS_MAGIC[0], SIMPLON_EOS_PREFIX[0]})
EOS_RESEND_S = 1.0
RUNNING, DRAINING, FANOUT = "running", "draining", "fanout"
ENDED_BY_IDLE = "ended by idleness"
"""The stream's ``reason`` when ``end_after_idle_s`` ended it."""


def _is_eos(payload: Any) -> bool:
    if isinstance(payload, bytes):
        view: Any = payload
    else:
        view = payload.head if isinstance(payload, NngPayload) else payload.buffer
    if not view or view[0] not in _EOS_FIRST_BYTES:  # most data: one byte decides (#18)
        return False
    return is_end_of_stream(view)  # either shape: NUL-prefixed JSON or a Simplon stop


def _looks_simplon(payload: Any) -> bool:
    """A Simplon message of upstream's form: ``c`` or ``m``, then a CBOR map."""
    view = payload if isinstance(payload, bytes) else payload.buffer
    return len(view) > 1 and view[0] in b"cm" and 0xA0 <= view[1] <= 0xBF


def _simplon_run(raw: bytes) -> str:
    """The ``run`` of a Simplon-shaped end-of-stream record ("" when it has none)."""
    import cbor2

    try:
        run = cbor2.loads(raw[1:]).get("run", "")
    except Exception:  # noqa: BLE001 - decode() already accepted the record's fields
        return ""
    return run if isinstance(run, str) else str(run)


class Buffer:
    """``run()`` blocks until the stream (or, with ``persistent``, a stop request) ends.

    ``start()`` runs it on a thread (tests, embedding); ``stop()`` drains and joins;
    ``stats()`` is safe from any thread; ``request_stop()`` is safe from a signal handler.
    """

    def __init__(self, config: BufferConfig) -> None:
        self.config = config
        self.name = f"buffer:{socket.gethostname()}:{os.getpid()}"
        self.fifo = BoundedFifo(config.capacity_bytes, config.capacity_messages)
        self.acct = StreamAccounting(config.expect_producers)
        self.consumers = ConsumerTable()
        self.rates = RateMeter()
        self.ready = threading.Event()
        self.metrics_port: int | None = None
        self.exit_code: int | None = None
        self.error: BaseException | None = None
        self._lock = threading.RLock()
        self._stops = 0
        self._thread: threading.Thread | None = None
        self.state = "starting"
        self.phase = RUNNING
        self.counts = {"messages_in": 0, "bytes_in": 0, "messages_out": 0, "bytes_out": 0}
        self.dropped = [0, 0]  # messages, bytes left undelivered (cumulative)
        self.corrupt_eos = 0
        self.streams_finished = 0
        self.jobndx = 1
        self.last_report: StreamReport | None = None
        self.callbacks: CallbackSender | None = None
        self.metrics: MetricsServer | None = None
        self._new_stream()

    # ------------------------------------------------------------------ public API
    def run(self) -> int:
        """Serve until done; return the exit code (0: every stream complete and delivered)."""
        try:
            self._open()
        except BaseException as err:
            self.error = err
            self.ready.set()
            raise
        self.ready.set()
        code = 0
        try:
            while True:
                if self.callbacks is not None:
                    self.callbacks.post("active", self.jobndx)
                code = self._run_stream()
                if not self.config.persistent or self._stops:
                    break
                self.jobndx += 1
                self._new_stream()
                self.acct.reset()
        finally:
            self._close()
        self.exit_code = code
        return code

    def start(self, timeout_s: float = 10.0) -> Buffer:
        """Run on a daemon thread; return once both sockets listen (or raise their error)."""

        def target() -> None:
            try:
                self.run()
            except BaseException as err:  # noqa: BLE001 - kept for the caller of stop()/wait()
                self.error = err
                self.exit_code = 2

        self._thread = threading.Thread(target=target, name="lclstream-buffer", daemon=True)
        self._thread.start()
        self.ready.wait(timeout_s)
        if self.error is not None:
            raise self.error
        return self

    def request_stop(self) -> None:
        """First call: stop accepting and drain; second call: stop now."""
        self._stops += 1

    def wait(self, timeout_s: float | None = None) -> int | None:
        if self._thread is not None:
            self._thread.join(timeout_s)
        return self.exit_code

    def stop(self, timeout_s: float | None = None) -> int | None:
        self.request_stop()
        timeout = self.config.drain_timeout_s + 5 if timeout_s is None else timeout_s
        return self.wait(timeout)

    def stats(self) -> dict[str, Any]:
        """``GET /stats`` as a dict (``stats_document()`` as JSON values)."""
        return self.stats_document().model_dump(mode="json")

    def stats_document(self) -> BufferStats:
        """The live stats, plus ``last_stream``: the final report of the last finished stream
        (what a persistent buffer's watcher reads once the stream it watched has ended)."""
        with self._lock:
            snapshot = build_stats(self)
            return BufferStats(**dict(snapshot), last_stream=self.last_report)

    # ------------------------------------------------------------------ lifecycle
    def _open(self) -> None:
        cfg = self.config
        # The end-of-stream record is an HDF5 image: import h5py now, not when the stream ends
        # (about 0.15 s that would delay the record to every consumer).
        import h5py  # noqa: F401

        self.context = zmq.Context()
        self.inp = open_endpoint(
            cfg.input_transport, cfg.input, "input", dial=cfg.dial_input,
            queue=cfg.socket_queue, linger_s=0, context=self.context,
            max_message_bytes=cfg.max_message_bytes,
        )  # fmt: skip
        try:
            self.out = open_endpoint(
                cfg.output_transport, cfg.output, "output", dial=cfg.dial_output,
                queue=cfg.socket_queue, linger_s=cfg.drain_timeout_s, context=self.context,
            )  # fmt: skip
        except BaseException:
            self.inp.close()
            raise
        if cfg.metrics:
            host, port = parse_hostport(cfg.metrics)
            self.metrics = MetricsServer(host, port, self.stats_document)
            self.metrics_port = self.metrics.port
        if cfg.callback:
            jobid = cfg.jobid or os.environ.get("LCLSTREAM_JOBID") or self.name
            self.callbacks = CallbackSender(cfg.callback, cfg.callback_secret, jobid)
        where = (
            f"; metrics on http://{cfg.metrics.rsplit(':', 1)[0]}:{self.metrics_port}"
            if cfg.metrics
            else ""
        )
        log.info(
            "%s: input %s %s (%s), output %s %s (%s), cap %d bytes / %d messages%s",
            self.name, "dials" if cfg.dial_input else "listens on", cfg.input, cfg.input_transport,
            "dials" if cfg.dial_output else "listens on", cfg.output, cfg.output_transport,
            cfg.capacity_bytes, cfg.capacity_messages, where,
        )  # fmt: skip

    def _close(self) -> None:
        if self.out.library == "zmq":
            stuck = self.consumers.connected() and self.phase != FANOUT
            self.out.socket.setsockopt(zmq.LINGER, 0 if stuck else 1000)
        self.inp.close()
        self.out.close()
        self.context.term()
        if self.callbacks is not None:
            self.callbacks.close()
        if self.metrics is not None:
            self.metrics.close()

    def _new_stream(self) -> None:
        self.stream_id = uuid.uuid4().hex
        self.stream_out = [0, 0]
        self.stream_dropped = 0
        self.phase, self.state, self.reason = RUNNING, "running", ""
        self.deadline: float | None = None
        self._next_peers = 0.0
        self.last_input = time.monotonic()
        self.eos_rounds, self.eos_sent, self.last_round = 0, 0, 0.0
        self.stream_first_data_at: float | None = None  # epoch seconds
        self.stream_finished_at: float | None = None
        self.control: list[bytes] = []
        # The shape of this stream's records (its producers' own): "hdf5", or "simplon" and run.
        self.eos_shape: tuple[str, str] = ("hdf5", "")

    # ------------------------------------------------------------------ the loop
    def _run_stream(self) -> int:
        poller_state: dict[str, Any] = {
            "poller": None, "registered": None, "nng_backoff": 0.0, "send_stalled": False,
        }  # fmt: skip
        next_log = time.monotonic() + self.config.log_interval_s
        while True:
            want_in = self.phase == RUNNING and self.fifo.has_room()
            want_out = bool(self.fifo) or bool(self.control)
            if want_in and not want_out:
                if (
                    not (self.out.waits_in_send and poller_state["send_stalled"])
                    and self.stream_first_data_at is not None  # _take saw the stream's shape
                ):
                    code = self._pump(poller_state)
                else:
                    code = self._receive_waiting()
                now = time.monotonic()
            elif self.fifo and self.out.waits_in_send and not poller_state["send_stalled"]:
                code = self._send_waiting(poller_state)
                now = time.monotonic()
            else:
                code = self._poll_once(poller_state, want_in, want_out)
                now = time.monotonic()
            if now >= next_log:
                next_log = now + self.config.log_interval_s
                self._log_progress()
            if code is not None:
                return code

    def _pump(self, state: dict[str, Any]) -> int | None:
        """Nothing queued and the stream's data has begun: forward message by message, each a
        blocking receive and a send (blocking where the output ``waits_in_send``, ZeroMQ; else
        without waiting, NNG), as a plain forwarding loop does, for up to ``PEER_S``. A message
        that goes straight through never enters the FIFO, and its accounting is added up here
        and booked under the lock once, when the pump stops; then the loop's own checks run
        (peer events, rates, stop requests, the stream's end). Per message those cost the
        buffer's main thread more than the forwarding itself (#18).

        The pump stops early at an end-of-stream record and at a send that times out or, not
        waiting, cannot go: both are booked through ``_take`` after the data before them (a
        message that could not go out is queued and the loop polls). It also stops at a
        receive that times out, at a stop request, and after a send that waited
        ``ABSORB_WAIT_S`` or more: consumers slower than producers, so the input's backlog is
        read into the FIFO at once and the loop sends it from there."""
        inp, out = self.inp, self.out
        waits = out.waits_in_send
        until = time.monotonic() + PEER_S
        passed: dict[str, list[int]] = {}  # connection key -> [messages, bytes] sent through
        left: tuple[Any, str] | None = None  # received, not sent: an EOS record or a stalled send
        absorb = False
        now = time.monotonic()
        while not self._stops:
            got = inp.recv_wait(POLL_S)
            if got is None:
                break
            payload, key = got
            if _is_eos(payload):
                left = got
                break
            started = time.monotonic()
            if not (out.send_wait(payload, SEND_WAIT_S) if waits else out.send_nowait(payload)):
                state["send_stalled"] = waits
                left = got
                break
            now = time.monotonic()
            tally = passed.get(key)
            if tally is None:
                passed[key] = [1, len(payload)]
            else:
                tally[0] += 1
                tally[1] += len(payload)
            if now - started >= ABSORB_WAIT_S:
                absorb = True
                break
            if now >= until:
                break
        now = time.monotonic()
        with self._lock:
            if passed:
                self._book_passed(passed, now)
            if left is not None:
                self._take(*left)
            if absorb and self.phase == RUNNING:
                self._refill()
            self._peer_events(now)
            self.rates.sample(self.counts)
            return self._advance(now)

    def _book_passed(self, passed: dict[str, list[int]], now: float) -> None:
        """Account messages that went from the input straight to the output (``_pump``)."""
        messages = nbytes = 0
        for key, (count, size) in passed.items():
            self.acct.data(key, size, count)
            messages += count
            nbytes += size
        counts = self.counts
        counts["messages_in"] += messages
        counts["bytes_in"] += nbytes
        counts["messages_out"] += messages
        counts["bytes_out"] += nbytes
        self.stream_out[0] += messages
        self.stream_out[1] += nbytes
        self.consumers.account_send(messages)
        self.last_input = now

    def _receive_waiting(self) -> int | None:
        """Nothing queued: wait in the input's own blocking receive, not in a poll, and send
        what came at once without waiting (NNG, or a ZeroMQ output whose last send timed out:
        a message that cannot go yet stays queued and the loop polls)."""
        got = self.inp.recv_wait(POLL_S)
        now = time.monotonic()
        with self._lock:
            self._peer_events(now)
            if got is not None:
                self._take(*got)  # an end-of-stream record: _advance sees it
            if self.fifo:
                self._send()
            self.rates.sample(self.counts)
            return self._advance(now)

    def _send_waiting(self, state: dict[str, Any]) -> int | None:
        """Data is queued: wait in the output's own blocking send (up to ``SEND_WAIT_S``) for a
        consumer to take the oldest message. A send that waited ``ABSORB_WAIT_S`` or more means
        the consumers are the slower side: the loop then takes what the input holds without
        waiting, and the FIFO absorbs it. After a quicker send it asks the input nothing: what
        is queued goes out first, then the loop waits in the input's blocking receive. A poll,
        a receive that finds nothing or a question per message cost the buffer's main thread
        about half as much again as the forwarding itself (#18). A send that times out (no
        consumer, or a slow one) hands the loop to the poll, which keeps reading the input,
        until a send through the poll succeeds."""
        payload = self.fifo.peek()
        started = time.monotonic()
        sent = self.out.send_wait(payload, SEND_WAIT_S)
        now = time.monotonic()
        with self._lock:
            if sent:
                self._sent(payload, True)
            else:
                state["send_stalled"] = True
            self._peer_events(now)
            if self.phase == RUNNING and now - started >= ABSORB_WAIT_S:
                self._refill()
            self.rates.sample(self.counts)
            return self._advance(now)

    def _poll_once(self, state: dict[str, Any], want_in: bool, want_out: bool) -> int | None:
        """Wait (up to ``POLL_S``) on whatever is wanted, then move what can move: receive
        while the FIFO has room, send while something is queued. The peer events wake the
        poll only while no data is wanted (while data moves they are read every ``PEER_S``)."""
        events = not (want_in or want_out)
        poller_items = self.inp.poll_items(want_in, events) + self.out.poll_items(want_out, events)
        if poller_items != state["registered"]:  # a new poller only when that changed
            state["poller"] = zmq.Poller()
            for target, flag in poller_items:
                state["poller"].register(target, flag)
            state["registered"] = poller_items
        timeout = POLL_S if state["nng_backoff"] == 0 else state["nng_backoff"]
        if poller_items:
            state["poller"].poll(int(timeout * 1000))
        else:  # NNG has no monitor socket: nothing to wait on, and poll() would not wait
            time.sleep(timeout)
        now = time.monotonic()
        with self._lock:
            self._peer_events(now, force=events)
            if want_in:
                self._receive()
            if want_out:
                stalled = not self._send()
                state["send_stalled"] = stalled
                # NNG's send fd can stay readable while no pipe is ready: back off.
                if stalled and self.out.library == "nng":
                    state["nng_backoff"] = min(max(state["nng_backoff"] * 2, 0.001), POLL_S)
                else:
                    state["nng_backoff"] = 0.0
            else:
                state["nng_backoff"] = 0.0
            self.rates.sample(self.counts)
            return self._advance(now)

    def _peer_events(self, now: float, force: bool = False) -> None:
        """Connections and hang-ups on both sides, read every ``PEER_S`` (reading them costs
        about a fifth of the loop's CPU per message, #18), or now with ``force``."""
        if not force and now < self._next_peers:
            return
        self._next_peers = now + PEER_S
        for event in self.inp.take_events():
            if event.kind == "connect":
                self.acct.connect(event.key, event.address)
            else:
                self.acct.disconnect(event.key)
        for event in self.out.take_events():
            if event.kind == "connect":
                self.consumers.connect(event.key, event.address)
                log.info("consumer %s connected from %s", event.key, event.address or "?")
            else:
                record = self.consumers.disconnect(
                    event.key, mid_stream=self.phase != FANOUT or not self.eos_sent
                )
                if record is not None and record.lost:
                    log.warning(
                        "consumer %s disconnected mid-stream after ~%d messages (estimate); "
                        "what it had not read yet is lost (at-most-once delivery)",
                        event.key, round(record.sent_estimate),
                    )  # fmt: skip

    def _receive(self) -> None:
        for _ in range(BATCH):
            if not self.fifo.has_room():
                return
            got = self.inp.recv_nowait()
            if got is None or not self._take(*got):
                return

    def _refill(self) -> None:
        """Whatever the input holds, without waiting, while the FIFO has room: the FIFO takes up
        what the consumers cannot yet. The first receive is tried at once; each next one only
        when the input says it has a message, since a receive that finds nothing costs about
        three times the asking (#18)."""
        for i in range(BATCH):
            if not self.fifo.has_room() or (i and not self.inp.has_input()):
                return
            got = self.inp.recv_nowait()
            if got is None or not self._take(*got):
                return

    def _take(self, payload: Any, key: str) -> bool:
        """Queue one received message (or account an end-of-stream record); False when the
        stream's producers have all ended: what follows belongs to the next stream."""
        self.last_input = time.monotonic()
        if _is_eos(payload):
            self._end_of_stream(payload, key)
            return not self.acct.complete()
        size = payload_size(payload)
        if self.stream_first_data_at is None:
            self.stream_first_data_at = time.time()
            if _looks_simplon(payload):  # producers without records: shape from the data
                self.eos_shape = ("simplon", self.eos_shape[1])
        self.fifo.put(payload)
        self.acct.data(key, size)
        self.counts["messages_in"] += 1
        self.counts["bytes_in"] += size
        return True

    def _end_of_stream(self, payload: Any, key: str) -> None:
        raw = payload if isinstance(payload, bytes) else payload.bytes
        try:
            eos = EndOfStream.decode(raw)
        except ProtocolError as err:
            self.corrupt_eos += 1
            log.warning("ignoring a corrupt end-of-stream record on %s: %s", key, err)
            return
        if raw.startswith(SIMPLON_EOS_PREFIX):
            self.eos_shape = ("simplon", _simplon_run(raw))
        if self.acct.end(key, eos):
            log.info(
                "producer %s (rank %d) ended: %d messages, %d bytes [%d/%s ended]",
                eos.producer, eos.rank, eos.messages, eos.bytes, len(self.acct.ended),
                self.config.expect_producers or "?",
            )  # fmt: skip

    def _send(self) -> bool:
        """Hand queued messages to the output; False when the output took nothing."""
        sent_any = False
        for _ in range(BATCH):
            if self.fifo:
                payload, is_data = self.fifo.peek(), True
            elif self.control:
                payload, is_data = self.control[0], False
            else:
                break
            if not self.out.send_nowait(payload):
                break
            sent_any = True
            self._sent(payload, is_data)
        return sent_any

    def _sent(self, payload: Any, is_data: bool) -> None:
        """The output took ``payload``, the head of the FIFO (data) or of the control queue."""
        if is_data:
            self.fifo.pop()
            size = payload_size(payload)
            self.counts["messages_out"] += 1
            self.counts["bytes_out"] += size
            self.stream_out[0] += 1
            self.stream_out[1] += size
            self.consumers.account_send()
        else:
            self.control.pop(0)
            self.eos_sent += 1

    def _advance(self, now: float) -> int | None:
        """Move the stream through running -> draining -> fan-out; an exit code when done."""
        cfg = self.config
        if self._stops > 1:
            self.reason = self.reason or "stopped"
            return self._finish("second stop request: stopping without draining")
        if self.phase == RUNNING:
            idle = cfg.idle_timeout_s is not None and now - self.last_input > cfg.idle_timeout_s
            quiet = (
                cfg.end_after_idle_s is not None
                and self.acct.started
                and now - self.last_input > cfg.end_after_idle_s
            )
            if self._stops:
                self._enter_draining("stopped", now + cfg.drain_timeout_s)
            elif self.acct.complete():
                self._enter_draining("complete", None)
            elif quiet:
                self._enter_draining(ENDED_BY_IDLE, now + cfg.drain_timeout_s)
            elif idle and (self.acct.started or not cfg.persistent):
                self._enter_draining("idle", now + cfg.drain_timeout_s)
            elif idle:
                self.last_input = now  # persistent and nothing started: keep waiting
        elif self._stops and self.deadline is None:
            self.deadline = now + cfg.drain_timeout_s
        if self.phase == DRAINING and not self.fifo:
            self.phase = FANOUT
            self.deadline = min(
                self.deadline or now + cfg.drain_timeout_s, now + cfg.drain_timeout_s
            )
        if self.phase == FANOUT:
            return self._fan_out(now)
        if self.deadline is not None and now > self.deadline:
            return self._finish(f"drain timeout ({cfg.drain_timeout_s} s) with data left")
        return None

    def _enter_draining(self, reason: str, deadline: float | None) -> None:
        self.phase, self.state, self.reason, self.deadline = DRAINING, "draining", reason, deadline
        problems = self.acct.problems() if reason != "complete" and self.acct.started else []
        log.info("stream %d: %s; draining %d messages", self.jobndx, reason, len(self.fifo))
        for problem in problems:
            log.warning("stream %d: %s", self.jobndx, problem)

    def _fan_out(self, now: float) -> int | None:
        connected = self.consumers.connected()
        if self.control:
            pass  # copies still being handed out
        elif not connected and (self.eos_rounds or not self.acct.started):
            return self._finish("")
        elif connected and (
            not self.eos_rounds
            or (
                now - self.last_round >= EOS_RESEND_S
                and now - self.consumers.last_disconnect >= EOS_RESEND_S
            )
        ):
            self.control = [self._eos_record(i, len(connected)) for i in range(len(connected))]
            self.eos_rounds += 1
            self.last_round = now
        if self.deadline is not None and now > self.deadline:
            still = len(connected)
            return self._finish(
                f"{still} consumer(s) still connected at drain timeout" if still else ""
            )
        return None

    def _eos_record(self, copy: int, copies: int) -> bytes:
        totals = self.acct.totals()
        extra: dict[str, object] = {
            "kind": "lclstream-buffer",
            "stream_id": self.stream_id,
            "stream": self.jobndx,
            "copy": copy,
            "copies": copies,
            "round": self.eos_rounds + 1,
            "complete": self.acct.complete(),
            "eos": self.acct.complete(),  # false: ended by idleness, completeness unknown
            "reason": self.reason,
            "producers_expected": self.config.expect_producers,
            "producers_ended": sorted(self.acct.ended),
            "producer_totals": totals,
            "problems": self.acct.problems(),
        }
        record = EndOfStream(
            producer=self.name, rank=0, events=totals["events"], batches=totals["batches"],
            messages=self.stream_out[0], bytes=self.stream_out[1], skipped=totals["skipped"],
            extra=extra,
        )  # fmt: skip
        shape, run = self.eos_shape  # in the stream's own shape, as its consumers read it
        return record.encode_simplon(run=run) if shape == "simplon" else record.encode()

    def _finish(self, note: str) -> int:
        left = self.fifo.clear()
        self.dropped[0] += left[0]
        self.dropped[1] += left[1]
        self.stream_dropped += left[0]
        problems = self.acct.problems()
        if left[0]:
            problems.append(f"{left[0]} messages ({left[1]} bytes) left undelivered")
        if note:
            problems.append(note)
        if not self.acct.started:
            # nothing arrived: fine when asked to stop, a failure when the idle timeout hit
            ok = self.reason == "stopped"
            problems.append("no producer sent anything")
        else:
            if not self.eos_sent:
                problems.append("no consumer received the end-of-stream record")
            ok = self.acct.complete() and not self.acct.unended() and not left[0]
            ok = ok and self.eos_sent > 0
        idle_end = (
            self.reason == ENDED_BY_IDLE and self.acct.started and not left[0] and self.eos_sent > 0
        )
        if idle_end and not ok:
            problems.append(
                f"ended after {self.config.end_after_idle_s} s without input: some producer "
                "sent no end-of-stream record, completeness unknown"
            )
        self.state = "done" if ok or idle_end else "failed"
        self.stream_finished_at = time.time()
        self.streams_finished += int(self.acct.started)
        self.last_report = StreamReport(
            **dict(build_stats(self)),
            problems=problems,
            reason=self.reason,
            eos=self.acct.complete(),  # false: ended by idleness or failed, no full account
        )
        level = logging.INFO if ok else logging.ERROR
        log.log(level, "stream %d %s (%s): %s", self.jobndx, self.state, self.reason,
                "; ".join(problems) or "all producers ended, everything delivered")  # fmt: skip
        code = 0 if ok else EXIT_ENDED_BY_IDLE if idle_end else 1
        if self.callbacks is not None:
            self.callbacks.post("completed" if ok or idle_end else "failed", self.jobndx, code)
        return code

    def _log_progress(self) -> None:
        log.info("%s", progress_line(self.stats_document()))
