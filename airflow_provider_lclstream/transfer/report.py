"""The end of a transfer: a human line in the log, counters to the Elog when asked for."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def summary_line(stats: dict[str, Any]) -> str:
    return (
        f"{stats.get('events', 0)} events, {stats.get('bytes', 0) / 1e6:.1f} MB in "
        f"{stats.get('duration_s', 0):.1f} s ({stats.get('mb_per_s', 0):.1f} MB/s), "
        f"{stats.get('skipped', 0)} skipped, {stats.get('lost', 0)} lost"
    )


def elog_counters(stats: dict[str, Any]) -> dict[str, str]:
    """The ARP counters for a finished transfer."""
    return {
        "LCLStream events": str(stats.get("events", 0)),
        "LCLStream MB": f"{stats.get('bytes', 0) / 1e6:.1f}",
        "LCLStream MB/s": f"{stats.get('mb_per_s', 0):.1f}",
        "LCLStream lost": str(stats.get("lost", 0)),
    }


def report_transfer(stats: dict[str, Any], conf: dict[str, Any]) -> dict[str, Any]:
    """Log the numbers; with ``conf["jid_update_counters"]`` post them to the ARP as counters
    (its ``Authorization`` comes from the Elog connection ``conf["elog_conn_id"]``, never conf)."""
    log.info("transfer finished: %s", summary_line(stats))
    url = conf.get("jid_update_counters")
    if url:
        from airflow_provider_lclstream.hooks.elog import ElogHook

        ElogHook(conf.get("elog_conn_id"), counters_url=str(url)).post_counters(
            elog_counters(stats)
        )
    return stats
