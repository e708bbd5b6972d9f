"""From Elog run events (AssetWatcher payloads) to transfer DAG-run confs."""

from __future__ import annotations

from typing import Any


def watcher_payloads(extras: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The trigger payloads of asset events (Airflow stores them under ``extra["payload"]``)."""
    return [dict(e["payload"]) for e in extras if isinstance(e.get("payload"), dict)]


def transfer_confs(
    events: list[dict[str, Any]], defaults: dict[str, Any], xtc_dir: str | None = None
) -> list[dict[str, Any]]:
    """One ``lclstream_transfer`` conf per run-start event (events of one DAG run may batch).

    ``defaults`` fill the request (detector, ranks, backends, ...); the event gives the
    experiment and run; ``xtc_dir`` (the caller passes ``[lclstream] xtc_dir``) is psana's
    ``dir=`` unless ``defaults`` name one.
    """
    confs = []
    seen: set[tuple[str, int]] = set()
    for event in events:
        if event.get("kind") != "run_start":
            continue
        key = (str(event["experiment"]), int(event["run"]))
        if key in seen:
            continue
        seen.add(key)
        request = {**defaults, "exp": key[0], "run": key[1]}
        run_dir = request.pop("xtc_dir", None) or xtc_dir
        if run_dir:
            request["xtc_dir"] = run_dir
        confs.append({"request": request, "trigger": "elog", "event": event})
    return confs
