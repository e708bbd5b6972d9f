"""Run each data handler on its own thread behind a bounded queue.

The engine hands every message to every handler's queue and goes on; each handler's thread
writes or sends at its own pace, so a slow file system holds up the stream only once the file
handler's queue is full (``queue`` messages). Order is kept per handler: broadcasts, data and the
end-of-stream record leave in the order they were queued. A handler's failure is raised in the
engine at its next delivery or at ``close``.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import TYPE_CHECKING, Any

from airflow_provider_lclstream.exceptions import LCLStreamError

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_provider_lclstream.protocol import EndOfStream
    from airflow_provider_lclstream.streamer.handlers.handlers import DataHandler
    from airflow_provider_lclstream.transports.base import Payload

POLL_S = 0.1
_STOP = object()


class QueuedHandler:
    """A ``DataHandler`` on its own thread; the same calls, queued.

    ``stats()`` reports ``max_backlog`` (the most messages ever waiting), ``backlog`` (waiting
    now), ``busy_s`` (time the handler spent working), ``blocked_s`` (time the engine waited for
    room in this queue) and ``messages`` (messages handled, not counting end-of-stream records).
    """

    def __init__(self, handler: DataHandler, capacity: int, name: str) -> None:
        self.handler = handler
        self.name = name
        self.capacity = capacity
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=capacity)
        self.error: BaseException | None = None
        self.max_backlog = 0
        self.busy_s = 0.0
        self.blocked_s = 0.0
        self.done = 0
        self.closed = False
        self.thread = threading.Thread(target=self._work, name=f"handler-{name}", daemon=True)
        self.thread.start()

    def _work(self) -> None:
        while True:
            item = self.queue.get()
            if item is _STOP:
                self.queue.task_done()
                break
            if self.error is not None:
                self.queue.task_done()
                continue  # failed: drain without working so the engine never blocks
            started = time.monotonic()
            try:
                kind, payload, encode = item
                if kind == "data":
                    self.handler.handle(payload)
                    self.done += 1
                elif kind == "broadcast":
                    self.handler.broadcast(payload)
                    self.done += 1
                else:
                    self.handler.end(payload, encode)
            except BaseException as err:  # raised in the engine by _check
                self.error = err
            finally:
                self.busy_s += time.monotonic() - started
                self.queue.task_done()
        try:
            self.handler.close()
        except BaseException as err:
            if self.error is None:
                self.error = err

    def _check(self) -> None:
        if self.error is not None:
            raise LCLStreamError(
                f"data handler {self.name} failed: {type(self.error).__name__}: {self.error}"
            ) from self.error

    def _put(self, item: Any) -> None:
        self._check()
        started = time.monotonic()
        while True:
            try:
                self.queue.put(item, timeout=POLL_S)
                break
            except queue.Full:
                self._check()
        self.blocked_s += time.monotonic() - started
        self.max_backlog = max(self.max_backlog, self.queue.qsize())

    def handle(self, message: Payload) -> None:
        self._put(("data", message, None))

    def broadcast(self, message: Payload) -> None:
        self._put(("broadcast", message, None))

    def end(
        self, record: EndOfStream, encode: Callable[[EndOfStream], bytes] | None = None
    ) -> None:
        self._put(("end", record, encode))

    def flush(self) -> None:
        """Wait until everything queued so far is done (raises the handler's failure)."""
        while self.queue.unfinished_tasks:
            self._check()
            time.sleep(0.005)
        self._check()

    def close(self) -> None:
        """Let the thread finish what is queued, close the handler, raise its failure."""
        if not self.closed:
            self.closed = True
            self.queue.put(_STOP)
            self.thread.join()
        self._check()

    def stats(self) -> dict[str, Any]:
        return {
            "handler": self.name,
            "queue": self.capacity,
            "max_backlog": self.max_backlog,
            "backlog": self.queue.qsize(),
            "busy_s": round(self.busy_s, 3),
            "blocked_s": round(self.blocked_s, 3),
            "messages": self.done,
        }


class InlineHandler:
    """A ``DataHandler`` called on the engine's own thread (``queue: 0``): no queue, no
    thread; the engine waits for every write or send. The same calls and stats as
    :class:`QueuedHandler` (``max_backlog`` and ``backlog`` are 0; ``blocked_s`` is the time
    the engine spent in the handler)."""

    def __init__(self, handler: DataHandler, name: str) -> None:
        self.handler = handler
        self.name = name
        self.busy_s = 0.0
        self.done = 0
        self.closed = False

    def _timed(self, call: Callable[[], None]) -> None:
        started = time.monotonic()
        try:
            call()
        except BaseException as err:
            raise LCLStreamError(
                f"data handler {self.name} failed: {type(err).__name__}: {err}"
            ) from err
        finally:
            self.busy_s += time.monotonic() - started

    def handle(self, message: Payload) -> None:
        self._timed(lambda: self.handler.handle(message))
        self.done += 1

    def broadcast(self, message: Payload) -> None:
        self._timed(lambda: self.handler.broadcast(message))
        self.done += 1

    def end(
        self, record: EndOfStream, encode: Callable[[EndOfStream], bytes] | None = None
    ) -> None:
        self._timed(lambda: self.handler.end(record, encode))

    def flush(self) -> None:
        """Nothing waits: every call returned once its work was done."""

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._timed(self.handler.close)

    def stats(self) -> dict[str, Any]:
        return {
            "handler": self.name,
            "queue": 0,
            "max_backlog": 0,
            "backlog": 0,
            "busy_s": round(self.busy_s, 3),
            "blocked_s": round(self.busy_s, 3),
            "messages": self.done,
        }
