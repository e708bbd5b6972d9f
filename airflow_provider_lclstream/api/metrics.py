"""Live numbers of a running transfer, read from its buffer's ``GET <metrics_url>/stats``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

from airflow_provider_lclstream.api.models import LiveMetrics
from airflow_provider_lclstream.buffer.stats import BufferStats, parse_stats

if TYPE_CHECKING:
    from collections.abc import Mapping

STATS_TIMEOUT_S = 2.0


def summarize(stats: BufferStats | Mapping[str, Any], batch_size: int | None) -> LiveMetrics:
    """The buffer's stats document as :class:`LiveMetrics` (events = messages x batch size)."""
    s = stats if isinstance(stats, BufferStats) else parse_stats(stats)
    producers = s.producers
    ended_events = sum(p.events for p in producers.per_producer.values())
    expected = producers.expected
    done = bool(expected) and producers.ended >= int(expected or 0)
    if done and ended_events:
        events: int | None = ended_events
    else:
        events = s.messages_in * batch_size if batch_size else None
    rates = s.rates
    return LiveMetrics(
        buffer_state=s.state,
        messages_in=s.messages_in,
        messages_out=s.messages_out,
        bytes_in=s.bytes_in,
        bytes_out=s.bytes_out,
        events=events,
        events_per_s=round(rates.messages_in * batch_size, 1) if batch_size else None,
        mb_per_s=round(rates.bytes_in / 1e6, 3),
        rates=rates.model_dump(),
        producers_seen=producers.seen,
        producers_ended=producers.ended,
        producers_expected=int(expected) if expected else None,
    )


def combine_metrics(parts: list[LiveMetrics]) -> LiveMetrics:
    """The live numbers of a transfer with several buffers: every counter summed (an error of
    any buffer is kept, naming it)."""
    if len(parts) == 1:
        return parts[0]
    errors = [f"buffer {i}: {m.error}" for i, m in enumerate(parts) if m.error]
    ok = [m for m in parts if not m.error]
    states = {m.buffer_state for m in ok if m.buffer_state}
    rates: dict[str, float] = {}
    for m in ok:
        for key, value in m.rates.items():
            rates[key] = rates.get(key, 0.0) + value
    events = [m.events for m in ok]
    per_s = [m.events_per_s for m in ok]
    expected = [m.producers_expected for m in ok]
    return LiveMetrics(
        buffer_state=states.pop() if len(states) == 1 else ",".join(sorted(states)) or None,
        messages_in=sum(m.messages_in for m in ok),
        messages_out=sum(m.messages_out for m in ok),
        bytes_in=sum(m.bytes_in for m in ok),
        bytes_out=sum(m.bytes_out for m in ok),
        events=None if None in events else sum(e or 0 for e in events),
        events_per_s=None if None in per_s else round(sum(e or 0 for e in per_s), 1),
        mb_per_s=round(sum(m.mb_per_s for m in ok), 3),
        rates=rates,
        producers_seen=sum(m.producers_seen for m in ok),
        producers_ended=sum(m.producers_ended for m in ok),
        producers_expected=None if None in expected else sum(e or 0 for e in expected),
        error="; ".join(errors) or None,
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
        stats = parse_stats(response.json(), url)
    except (httpx.HTTPError, ValueError) as err:  # StatsDocumentError is a ValueError
        return LiveMetrics(error=f"buffer stats unavailable: {type(err).__name__}")
    return summarize(stats, batch_size)
