"""Run-start events become one transfer conf each (duplicates and other kinds dropped)."""

from __future__ import annotations

from airflow_provider_lclstream.config.transfer import TransferRequest
from airflow_provider_lclstream.transfer.run_events import transfer_confs


def test_one_conf_per_run_start() -> None:
    events = [
        {"kind": "run_start", "experiment": "xpptut15", "run": 14, "time": "t"},
        {"kind": "run_start", "experiment": "xpptut15", "run": 14, "time": "t"},
        {"kind": "run_end", "experiment": "xpptut15", "run": 13, "time": "t"},
        {"kind": "run_start", "experiment": "mfxl1027522", "run": 2, "time": "t"},
    ]
    confs = transfer_confs(events, {"detector_name": "xppcspad", "ranks": 2}, "/data/xtc")
    assert [(c["request"]["exp"], c["request"]["run"]) for c in confs] == [
        ("xpptut15", 14),
        ("mfxl1027522", 2),
    ]
    request = TransferRequest.model_validate(confs[0]["request"])
    assert request.source_identifier == "exp=xpptut15,run=14,dir=/data/xtc"


def test_payloads_come_from_the_asset_event_extra() -> None:
    from airflow_provider_lclstream.transfer.run_events import watcher_payloads

    extras = [
        {"from_trigger": True, "payload": {"kind": "run_start", "experiment": "x", "run": 1}},
        {"note": "an event posted by hand"},
    ]
    assert watcher_payloads(extras) == [{"kind": "run_start", "experiment": "x", "run": 1}]
