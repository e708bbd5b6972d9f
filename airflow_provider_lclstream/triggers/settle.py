"""Hold back a trigger's first event until the deferring task's worker process has exited.

Works around apache/airflow#71580 and apache/airflow#72716 (both open in Airflow 3.3.2): when a
trigger fires within seconds of the deferral (a short job, a transfer that already ended), the
task is queued again before the first worker reports "deferred"; the executor's stale "success"
of that first workload then reaches the scheduler for a queued task, which marks it failed
("task state changed externally"). Operators set ``not_before`` (epoch seconds) a few seconds
after deferring; triggers wait until then before yielding.

The hold-back is ``[lclstream] trigger_settle_seconds`` (default 10). It applies only on Airflow
versions below :data:`FIXED_IN`, the first release with both fixes; None (today) means every
version. When Airflow ships the fixes, set :data:`FIXED_IN` to that release.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from packaging.version import Version

from airflow_provider_lclstream.hooks import settings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from airflow.triggers.base import TriggerEvent

#: The apache/airflow issues this module works around.
AIRFLOW_ISSUES = ("apache/airflow#71580", "apache/airflow#72716")
#: First Airflow release where both issues are fixed; None: not fixed yet, always settle.
FIXED_IN: str | None = None

# ``dag.test()`` runs triggers inline and has no such race: tests and the demo set it to 0.
SETTLE_S = settings.get_float("trigger_settle_seconds")


def needs_settling(airflow_version: str | None = None) -> bool:
    """Whether this Airflow (default: the installed one) still has the race."""
    if FIXED_IN is None:
        return True
    if airflow_version is None:
        import airflow

        airflow_version = airflow.__version__
    return Version(airflow_version) < Version(FIXED_IN)


def settle_deadline(seconds: float = SETTLE_S) -> float | None:
    """``not_before`` for a trigger created now; None when settling is off or not needed."""
    if seconds <= 0 or not needs_settling():
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
