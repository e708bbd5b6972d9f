"""Live numbers of a running transfer, read from its buffer's ``GET <metrics_url>/stats``."""

from __future__ import annotations

from typing import Any

import httpx

from airflow_provider_lclstream.api.models import LiveMetrics

STATS_TIMEOUT_S = 2.0


def summarize(stats: dict[str, Any], batch_size: int | None) -> LiveMetrics:
    """The buffer's stats document as :class:`LiveMetrics` (events = messages x batch size)."""
    rates = {k: float(v) for k, v in (stats.get("rates") or {}).items() if _is_number(v)}
    producers = stats.get("producers") or {}
    messages_in = int(stats.get("messages_in") or 0)
    per_producer = producers.get("per_producer") or {}
    ended_events = sum(int(p.get("events") or 0) for p in per_producer.values())
    expected = producers.get("expected")
    done = bool(expected) and int(producers.get("ended") or 0) >= int(expected or 0)
    if done and ended_events:
        events: int | None = ended_events
    else:
        events = messages_in * batch_size if batch_size else None
    return LiveMetrics(
        buffer_state=stats.get("state"),
        messages_in=messages_in,
        messages_out=int(stats.get("messages_out") or 0),
        bytes_in=int(stats.get("bytes_in") or 0),
        bytes_out=int(stats.get("bytes_out") or 0),
        events=events,
        events_per_s=round(rates.get("messages_in", 0.0) * batch_size, 1) if batch_size else None,
        mb_per_s=round(rates.get("bytes_in", 0.0) / 1e6, 3),
        rates=rates,
        producers_seen=int(producers.get("seen") or 0),
        producers_ended=int(producers.get("ended") or 0),
        producers_expected=int(expected) if expected else None,
    )


async def fetch_metrics(
    metrics_url: str, batch_size: int | None, client: httpx.AsyncClient | None = None
) -> LiveMetrics:
    """Read ``/stats``; an unreachable buffer gives ``LiveMetrics(error=...)``, never raises."""
    url = metrics_url.rstrip("/") + "/stats"
    try:
        if client is None:
            async with httpx.AsyncClient(timeout=STATS_TIMEOUT_S) as own:
                response = await own.get(url)
        else:
            response = await client.get(url, timeout=STATS_TIMEOUT_S)
        response.raise_for_status()
        stats = response.json()
        if not isinstance(stats, dict):
            raise ValueError("stats is not a JSON object")
    except (httpx.HTTPError, ValueError) as err:
        return LiveMetrics(error=f"buffer stats unavailable: {type(err).__name__}")
    return summarize(stats, batch_size)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
