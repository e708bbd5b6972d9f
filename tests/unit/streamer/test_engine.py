"""The chain on one rank, in-process: sources, incomplete events, file handler, psana1 fake."""

from __future__ import annotations

import io
import time
import types
from pathlib import Path

import h5py
import numpy as np
import pytest

from airflow_provider_lclstream.config.loader import validate_streamer_config
from airflow_provider_lclstream.exceptions import MissingDependencyError
from airflow_provider_lclstream.streamer.engine import IncompleteEventError, Streamer
from airflow_provider_lclstream.streamer.sources.base import Partition
from airflow_provider_lclstream.streamer.sources.psana1 import Psana1EventSource, import_psana1


def file_config(tmp_path: Path, **overrides: object) -> dict:
    config: dict = {
        "source_identifier": "synthetic",
        "event_source": {"type": "InternalEventSource", "number_of_events_to_generate": 7},
        "data_sources": {
            "detector_data": {"type": "SyntheticDetector", "shape": "2,32,32"},
            "ident": {"type": "SourceIdentifier"},
        },
        "processing_pipeline": {"type": "BatchProcessingPipeline", "batch_size": 3},
        "data_serializer": {"type": "HDF5BinarySerializer", "fields": {"detector_data": "/data"}},
        "data_handlers": [
            {
                "type": "BinaryFileWritingDataHandler",
                "write_directory": str(tmp_path),
                "file_prefix": "run",
            }
        ],
    }
    config.update(overrides)
    return config


def test_internal_source_to_files(tmp_path: Path) -> None:
    summary = Streamer(validate_streamer_config(file_config(tmp_path)), Partition(1, 2)).run()
    assert summary["events"] == 7 and summary["batches"] == 3 and summary["messages"] == 3
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["run_r1_0.h5", "run_r1_1.h5", "run_r1_2.h5"]  # no temp files left
    with h5py.File(tmp_path / "run_r1_2.h5") as h5:
        assert h5["/data"].shape == (1, 2, 32, 32)
        assert h5.attrs["lclstream_rank"] == 1


def test_num_events_limits(tmp_path: Path) -> None:
    summary = Streamer(validate_streamer_config(file_config(tmp_path))).run(max_events=4)
    assert summary["events"] == 4 and summary["batches"] == 2


def hdf5_config(tmp_path: Path, skip: bool) -> dict:
    source = tmp_path / "in.h5"
    with h5py.File(source, "w") as h5:
        h5["/entry/frames"] = np.arange(5 * 4 * 4, dtype=np.float32).reshape(5, 4, 4)
        h5["/entry/energy"] = np.array([1.0, np.nan, 3.0, 4.0, 5.0])
    out = tmp_path / "out"
    return file_config(
        out,
        skip_incomplete_events=skip,
        event_source={"type": "Hdf5EventSource", "files": [str(tmp_path / "*.h5")]},
        data_sources={
            "frames": {
                "type": "Psana2DetectorInterface",
                "psana_name": "x",
                "psana_fields": "raw.raw",
            },
            "energy": {"type": "Psana2DetectorInterface", "psana_name": "E:PV"},
        },
        data_serializer={
            "type": "HDF5BinarySerializer",
            "fields": {"frames": "/f", "energy": "/e"},
        },
    )


def test_hdf5_replay(tmp_path: Path) -> None:
    config = validate_streamer_config(hdf5_config(tmp_path, skip=False))
    summary = Streamer(config, Partition(0, 1)).run()
    assert summary["events"] == 5
    with h5py.File(tmp_path / "out" / "run_r0_0.h5") as h5:
        np.testing.assert_array_equal(h5["/f"][0], np.arange(16, dtype=np.float32).reshape(4, 4))


class MissingEnergy:
    """A psana1-shaped fake module: DataSource(str).events(), Detector(name)(...), EventId."""

    class EventId:
        pass

    class Event:
        def __init__(self, i: int) -> None:
            self.i = i

        def get(self, kind: object) -> object:
            return types.SimpleNamespace(time=lambda: (1_700_000_000 + self.i, 500_000_000))

    class DataSource:
        def __init__(self, spec: str) -> None:
            assert spec == "exp=xpptut15:run=54:smd"

        def events(self):
            return (MissingEnergy.Event(i) for i in range(6))

    class Detector:
        def __init__(self, name: str) -> None:
            self.name = name

        def calib(self, evt):
            return np.full((2, 3), evt.i, dtype=np.float32)

        def __call__(self):
            return 8.3


def psana1_config(tmp_path: Path) -> dict:
    return file_config(
        tmp_path,
        source_identifier="exp=xpptut15:run=54:smd",
        event_source={"type": "Psana1EventSource"},
        data_sources={
            "timestamp": {"type": "Psana1Timestamp"},
            "detector_data": {
                "type": "Psana1AreaDetector",
                "psana_name": "cspad",
                "calibration": True,
            },
            "wavelength": {"type": "Psana1PV", "psana_name": "SIOC:SYS0:ML00:AO192"},
        },
        data_serializer={
            "type": "HDF5BinarySerializer",
            "fields": {"detector_data": "/data", "timestamp": "/t"},
        },
    )


def test_psana1_event_mapping_with_fake_module(tmp_path: Path) -> None:
    config = validate_streamer_config(psana1_config(tmp_path))
    source = Psana1EventSource(config, Partition(1, 2), psana_module=MissingEnergy)
    got = list(source.events(None))
    assert [event_id for event_id, _ in got] == ["1", "3", "5"]
    event = got[0][1]
    np.testing.assert_array_equal(event["detector_data"], np.full((2, 3), 1, dtype=np.float32))
    assert float(event["timestamp"]) == pytest.approx(1_700_000_001.5)
    assert float(event["wavelength"]) == pytest.approx(8.3)


def test_psana1_not_installed_is_clear(tmp_path: Path) -> None:
    with pytest.raises(MissingDependencyError, match="psana1"):
        import_psana1()
    config = validate_streamer_config(psana1_config(tmp_path))
    with pytest.raises(MissingDependencyError, match="psana1"):
        Streamer(config).run()


def test_internal_source_rate_limit(tmp_path: Path) -> None:
    source = {"type": "InternalEventSource", "number_of_events_to_generate": 6}
    config = file_config(tmp_path, event_source={**source, "events_per_second": 20.0})
    started = time.monotonic()
    summary = Streamer(validate_streamer_config(config)).run()
    elapsed = time.monotonic() - started
    assert summary["events"] == 6
    assert elapsed >= 5 / 20.0  # event i is not made before i / rate seconds
    with pytest.raises(ValueError, match="events_per_second"):
        validate_streamer_config(
            file_config(tmp_path, event_source={**source, "events_per_second": 0})
        )


def test_incomplete_events_skipped_or_refused(tmp_path: Path) -> None:
    config = file_config(
        tmp_path,
        event_source={"type": "InternalEventSource", "number_of_events_to_generate": 4},
    )
    parsed = validate_streamer_config(config)
    streamer = Streamer(parsed)
    # Make every other event lack the detector: wrap the real source's events.
    from airflow_provider_lclstream.streamer import engine

    real = engine.build_event_source

    def holey(cfg, partition):
        source = real(cfg, partition)
        inner = source.events

        def events(limit):
            for n, (event_id, event) in enumerate(inner(limit)):
                if n % 2:
                    event["detector_data"] = None
                yield event_id, event

        source.events = events  # type: ignore[method-assign]
        return source

    engine.build_event_source = holey
    try:
        with pytest.raises(IncompleteEventError, match=r"event r0/1: .*detector_data"):
            streamer.run()
        skipping = validate_streamer_config({**config, "skip_incomplete_events": True})
        summary = Streamer(skipping).run()
        assert summary["events"] == 2 and summary["skipped"] == 2  # went on past the first
    finally:
        engine.build_event_source = real


def test_blob_is_plain_hdf5_for_upstream_consumers(tmp_path: Path) -> None:
    Streamer(validate_streamer_config(file_config(tmp_path))).run()
    blob = (tmp_path / "run_r0_0.h5").read_bytes()
    with h5py.File(io.BytesIO(blob)) as h5:
        assert h5["/data"].dtype == np.uint16


def test_offline_exp_run_dir_finds_files(tmp_path: Path) -> None:
    from airflow_provider_lclstream.exceptions import LCLStreamError
    from airflow_provider_lclstream.streamer.sources.psana2 import files_on_disk

    (tmp_path / "xpptut15-r0014-s000-c000.xtc2").write_bytes(b"")
    (tmp_path / "xpptut15-r0015-s000-c000.xtc2").write_bytes(b"")
    kwargs = files_on_disk({"exp": "xpptut15", "run": 14, "dir": str(tmp_path), "max_events": 3})
    assert kwargs == {"max_events": 3, "files": str(tmp_path / "xpptut15-r0014-s000-c000.xtc2")}
    with pytest.raises(LCLStreamError, match="no file xpptut15-r0099"):
        files_on_disk({"exp": "xpptut15", "run": 99, "dir": str(tmp_path)})
