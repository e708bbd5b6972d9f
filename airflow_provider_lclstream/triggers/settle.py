"""Hold back a trigger's first event until the deferring task's worker process has exited.

Seen with Airflow 3.3 and the LocalExecutor: when a trigger fires within seconds of the
deferral (a short job, a transfer that already ended), the task is queued again before the
first worker reports "deferred"; the scheduler then sees the old workload's "success" for a
queued task and marks it failed ("task state changed externally"). Operators set
``not_before`` (epoch seconds) a few seconds after deferring; triggers wait until then before
yielding.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from airflow.triggers.base import TriggerEvent

# ``dag.test()`` runs triggers inline and has no such race: tests and the demo set it to 0.
SETTLE_S = float(os.environ.get("LCLSTREAM_TRIGGER_SETTLE_S", "10"))


def settle_deadline(seconds: float = SETTLE_S) -> float | None:
    """``not_before`` for a trigger created now; None when settling is off."""
    if seconds <= 0:
        return None
    return time.time() + seconds


async def settled(
    events: AsyncIterator[TriggerEvent], not_before: float | None
) -> AsyncIterator[TriggerEvent]:
    """Yield ``events``, none of them before ``not_before``."""
    async for event in events:
        if not_before is not None:
            await asyncio.sleep(max(0.0, not_before - time.time()))
        yield event
