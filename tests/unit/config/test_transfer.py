"""TransferRequest: validation names the field; rendering gives a valid streamer config."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from airflow_provider_lclstream.config.loader import dump_flat, validate_streamer_config
from airflow_provider_lclstream.config.transfer import TransferRequest


def test_slides_request_renders_psana2_config() -> None:
    request = TransferRequest(
        exp="xpptut15",
        run=670,
        access_mode="smd",
        detector_name="epix10k2M",
        mode="calib",
        img_per_file=1,
    )
    config = request.to_streamer_config("tcp://127.0.0.1:5000")
    assert config.source_identifier == "exp=xpptut15,run=670"
    assert config.data_sources["detector_data"].psana_fields == ["raw.calib"]
    assert config.processing_pipeline.batch_size == 1
    assert config.data_handlers[0].urls == ["tcp://127.0.0.1:5000"]
    assert validate_streamer_config(dump_flat(config)) == config  # a file upstream would take
    assert request.label == "xpptut15-r0670"
    live = TransferRequest(exp="xpptut15", run=670, access_mode="live", xtc_dir="/d")
    assert live.source_identifier == "exp=xpptut15,run=670,dir=/d,live=1"


def test_files_and_synthetic_sources() -> None:
    files = TransferRequest(files=["/data/run.xtc2"], mode="raw")
    assert files.source_identifier == "files=/data/run.xtc2"
    synthetic = TransferRequest(synthetic=True, events=5, library="nng")
    config = synthetic.to_streamer_config("tcp://127.0.0.1:1")
    assert config.event_source.number_of_events_to_generate == 5
    assert config.data_handlers[0].library == "nng"


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        ({"exp": "xpp;rm -rf /", "run": 1}, "exp"),
        ({"exp": "xpptut15", "run": 1, "detector_name": "$(reboot)"}, "detector_name"),
        ({"files": ["/data/a b.xtc2"]}, "files"),
        ({"files": ["../../etc/passwd"]}, "files"),
        ({"synthetic": True, "mode": "fancy"}, "mode"),
        ({"synthetic": True, "img_per_file": 0}, "img_per_file"),
        ({"synthetic": True, "buffer_host": "x; curl evil"}, "buffer_host"),
        ({"synthetic": True, "streamer": {"backend": "cloud"}}, "streamer.backend"),
        ({"synthetic": True, "colour": "red"}, "colour"),
    ],
)
def test_bad_fields_are_named(fields: dict, bad: str) -> None:
    with pytest.raises(ValidationError) as err:
        TransferRequest.model_validate(fields)
    located = [".".join(str(p) for p in e["loc"]) for e in err.value.errors()]
    assert any(loc.startswith(bad) for loc in located), located


def test_exactly_one_data_source() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        TransferRequest(exp="xpptut15", run=1, synthetic=True)
    with pytest.raises(ValidationError, match="exactly one"):
        TransferRequest()
    with pytest.raises(ValidationError, match="run is required"):
        TransferRequest(exp="xpptut15")


def test_user_config_is_repointed_at_the_buffer() -> None:
    document = {
        "event_source": {"type": "InternalEventSource", "number_of_events_to_generate": 3},
        "data_sources": {"d": {"type": "SyntheticDetector", "shape": [4, 4]}},
        "processing_pipeline": {"type": "NoOpProcessingPipeline"},
        "data_serializer": {"type": "HDF5BinarySerializer"},
        "data_handlers": [
            {"type": "BinaryFileWritingDataHandler", "write_directory": "/tmp/x"},
            {"type": "BinaryDataStreamingDataHandler", "urls": ["tcp://far:1"], "role": "server"},
        ],
    }
    request = TransferRequest(config=document, library="nng")
    config = request.to_streamer_config("tcp://127.0.0.1:7000")
    kinds = [h.type for h in config.data_handlers]
    assert kinds == ["BinaryFileWritingDataHandler", "BinaryDataStreamingDataHandler"]
    streaming = config.data_handlers[1]
    assert streaming.urls == ["tcp://127.0.0.1:7000"] and streaming.role == "client"
    assert streaming.library == "nng"
    with pytest.raises(ValidationError, match="data_sources"):
        TransferRequest(config={**document, "data_sources": {}})


def test_request_from_fixes_the_buffer_ports_so_jobs_can_start_together() -> None:
    from airflow_provider_lclstream.transfer.jobs import BufferEndpoints
    from airflow_provider_lclstream.transfer.request import request_from

    picked = request_from({"request": {"synthetic": True}}, {})
    ports = picked["buffer_ports"]
    assert len(ports) == 3 and len(set(ports)) == 3 and all(p > 1024 for p in ports)
    endpoints = BufferEndpoints.pick(picked["buffer_host"], tuple(ports))
    assert endpoints.input_url == f"tcp://127.0.0.1:{ports[0]}"
    given = request_from({"request": {"synthetic": True, "buffer_ports": [5000, 5001, 5002]}}, {})
    assert given["buffer_ports"] == [5000, 5001, 5002]  # the user's ports are kept


def test_buffer_host_is_a_pin_for_backends_that_can_pin_only() -> None:
    """``buffer_host`` becomes ``nodelist`` on the buffer job; a backend that cannot place a job
    on a node refuses it, naming the backends that can; ``nodelist`` in attributes points at
    ``buffer_host``."""
    from airflow_provider_lclstream.transfer.jobs import BufferEndpoints, buffer_job

    assert TransferRequest(synthetic=True).buffer_host is None
    pinned = TransferRequest(synthetic=True, buffer_host="lcls-n1", buffer={"backend": "slurm"})
    spec = buffer_job(pinned, BufferEndpoints.pick(None, (5000, 5001, 5002)))
    assert spec.attributes["nodelist"] == "lcls-n1"
    unpinned = buffer_job(TransferRequest(synthetic=True), BufferEndpoints.pick())
    assert "nodelist" not in unpinned.attributes
    refused = r"backend 'local' cannot place a job on a named node.*slurm, slurm_cli"
    with pytest.raises(ValidationError, match=refused):
        TransferRequest(synthetic=True, buffer_host="lcls-n1")
    with pytest.raises(ValidationError, match="pin the buffer to a node with the request's"):
        TransferRequest(
            synthetic=True, buffer={"backend": "slurm", "attributes": {"nodelist": "lcls-n1"}}
        )


def test_buffers_split_ranks_and_consumers_and_need_their_ports() -> None:
    from airflow_provider_lclstream.transfer.jobs import (
        BufferEndpoints,
        buffer_job,
        buffer_of,
        buffer_ports,
        producers_of,
        with_buffer_ports,
    )

    request = TransferRequest(synthetic=True, ranks=5, buffers=2, consumers=2)
    assert [producers_of(b, 5, 2) for b in (0, 1)] == [3, 2]  # ranks 0, 2, 4 and 1, 3
    assert [buffer_of(i, 2) for i in range(5)] == [0, 1, 0, 1, 0]
    fixed = with_buffer_ports(request)
    assert fixed.buffer_ports is not None and len(set(fixed.buffer_ports)) == 6
    assert buffer_ports(fixed, 1) == fixed.buffer_ports[3:]
    second = buffer_job(fixed, BufferEndpoints.pick(None, buffer_ports(fixed, 1)), index=1)
    assert "--expect-producers 2 " in second.script and second.name == "buffer1-synthetic"
    config = request.to_streamer_config(["tcp://a:1", "tcp://b:2"])
    handler = config.data_handlers[0]
    assert handler.urls == ["tcp://a:1", "tcp://b:2"] and handler.distribute is True
    assert request.to_streamer_config("tcp://a:1").data_handlers[0].distribute is False
    for bad, message in [
        ({"ranks": 1, "buffers": 2}, "every buffer needs a streamer rank"),
        ({"ranks": 4, "buffers": 2, "consumers": 1}, "every buffer needs a consumer"),
        ({"ranks": 4, "buffers": 2, "addr": "tcp://me:9000"}, "it takes one buffer"),
        ({"ranks": 4, "buffers": 2, "consumers": 2, "buffer_ports": [1, 2, 3]}, "need 6"),
        ({"buffer_ports": [1, 2, 70000]}, r"\[70000\] are not ports"),
    ]:
        with pytest.raises(ValidationError, match=message):
            TransferRequest(synthetic=True, **bad)


def test_a_loopback_buffer_host_on_the_local_backend_is_no_pin() -> None:
    """Requests from before ``buffer_host`` became a pin (the old default 127.0.0.1) still run:
    a local buffer runs on the worker's host anyway."""
    from airflow_provider_lclstream.transfer.jobs import BufferEndpoints, buffer_job

    for host in ("127.0.0.1", "localhost"):
        request = TransferRequest(synthetic=True, buffer_host=host)
        assert request.buffer_pin is None
        assert "nodelist" not in buffer_job(request, BufferEndpoints.pick()).attributes
    slurm = TransferRequest(synthetic=True, buffer_host="localhost", buffer={"backend": "slurm"})
    assert slurm.buffer_pin == "localhost"
