"""From Elog run events (AssetWatcher payloads) to transfer DAG-run confs."""

from __future__ import annotations

import os
from typing import Any

KAFKA_BOOTSTRAP_ENV = "LCLSTREAM_KAFKA_BOOTSTRAP"
EXPERIMENTS_ENV = "LCLSTREAM_EXPERIMENTS"
XTC_DIR_ENV = "LCLSTREAM_XTC_DIR"


def watcher_settings() -> dict[str, Any]:
    """Where the run-start watcher listens: environment of the triggerer/dag-processor."""
    return {
        "bootstrap_servers": os.environ.get(KAFKA_BOOTSTRAP_ENV, "127.0.0.1:9092"),
        "experiment_pattern": os.environ.get(EXPERIMENTS_ENV) or None,
    }


def watcher_payloads(extras: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The trigger payloads of asset events (Airflow stores them under ``extra["payload"]``)."""
    return [dict(e["payload"]) for e in extras if isinstance(e.get("payload"), dict)]


def transfer_confs(events: list[dict[str, Any]], defaults: dict[str, Any]) -> list[dict[str, Any]]:
    """One ``lclstream_transfer`` conf per run-start event (events of one DAG run may batch).

    ``defaults`` fill the request (detector, ranks, backends, ...); the event gives the
    experiment and run; ``xtc_dir`` (default ``$LCLSTREAM_XTC_DIR``) is psana's ``dir=``.
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
        xtc_dir = request.pop("xtc_dir", None) or os.environ.get(XTC_DIR_ENV)
        if xtc_dir:
            request["xtc_dir"] = xtc_dir
        confs.append({"request": request, "trigger": "elog", "event": event})
    return confs
