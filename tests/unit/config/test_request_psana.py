"""Access modes, psana 1|2|auto, calibration and psana's knobs in a TransferRequest."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from airflow_provider_lclstream.config.transfer import TransferRequest, psana_of


@pytest.mark.parametrize(
    ("exp", "version"),
    [("xppl1234567", 1), ("mfxl1002223", 1), ("cxi12345", 1), ("tmoc00118", 2),
     ("rixx1003721", 2), ("xpptut15", 2)],
)  # fmt: skip
def test_auto_decides_by_instrument(exp: str, version: int) -> None:
    assert psana_of(exp) == version
    assert TransferRequest(exp=exp, run=1).psana_version == version


def test_idx_is_psana1_only() -> None:
    with pytest.raises(ValidationError, match="psana2 has no idx mode"):
        TransferRequest(exp="tmoc00118", run=3, access_mode="idx")
    psana1 = TransferRequest(exp="tmoc00118", run=3, access_mode="idx", psana=1)
    assert psana1.source_identifier == "exp=tmoc00118:run=3:idx"
    config = psana1.to_streamer_config("tcp://127.0.0.1:1")
    assert config.event_source.type == "Psana1EventSource"


def test_smd_and_live_mean_different_jobs() -> None:
    smd = TransferRequest(exp="tmoc00118", run=3, xtc_dir="/d")
    live = TransferRequest(exp="tmoc00118", run=3, xtc_dir="/d", access_mode="live")
    assert smd.source_identifier == "exp=tmoc00118,run=3,dir=/d"
    assert live.source_identifier == "exp=tmoc00118,run=3,dir=/d,live=1"
    with pytest.raises(ValidationError, match="needs exp and run"):
        TransferRequest(files=["/d/a.xtc2"], access_mode="live")
    with pytest.raises(ValidationError, match="set psana: 2"):
        TransferRequest(exp="xppl1234567", run=3, access_mode="live")


def test_knobs_and_calibration_reach_the_event_source() -> None:
    request = TransferRequest(
        exp="tmoc00118", run=3, mode="calib", calibration="skip",
        psana_knobs={"batch_size": 5, "max_retries": 20},
    )  # fmt: skip
    source = request.to_streamer_config("tcp://127.0.0.1:1").event_source
    assert source.calibration == "skip"
    assert (source.knobs.batch_size, source.knobs.max_retries) == (5, 20)
    with pytest.raises(ValidationError):
        TransferRequest(exp="tmoc00118", run=3, psana_knobs={"batch_size": 0})
