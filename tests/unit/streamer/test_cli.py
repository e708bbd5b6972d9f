"""``lclstreamer`` with no ``--config`` reads ``./lclstreamer.yaml`` (upstream's default)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import yaml

BIN = Path(sys.executable).parent

CONFIG = {
    "event_source": {"type": "InternalEventSource", "number_of_events_to_generate": 4},
    "data_sources": {"detector_data": {"type": "SyntheticDetector", "shape": [8, 8]}},
    "processing_pipeline": {"type": "BatchProcessingPipeline", "batch_size": 2},
    "data_serializer": {"type": "HDF5BinarySerializer"},
    "data_handlers": [
        {"type": "BinaryFileWritingDataHandler", "write_directory": "out", "file_suffix": "h5"}
    ],
}


def lclstreamer(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "lclstreamer"), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_no_config_reads_lclstreamer_yaml_in_working_directory(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "lclstreamer.yaml").write_text(yaml.safe_dump(CONFIG), encoding="utf-8")
    result = lclstreamer(tmp_path)
    assert result.returncode == 0, result.stderr
    files = sorted((tmp_path / "out").iterdir())
    assert files, "the default config's file handler wrote nothing"
    events = 0
    for path in files:
        with h5py.File(path) as f:
            events += len(f["detector_data"])
    assert events == 4
    check = lclstreamer(tmp_path, "--check")
    assert check.returncode == 0 and "lclstreamer.yaml is valid" in check.stdout


def test_no_config_and_no_default_file_is_a_clear_error(tmp_path: Path) -> None:
    result = lclstreamer(tmp_path)
    assert result.returncode == 2
    assert "no --config given and no lclstreamer.yaml in the working directory" in result.stderr
    assert str(tmp_path) in result.stderr and "--config FILE" in result.stderr
    assert "Traceback" not in result.stderr


def test_help_names_the_default() -> None:
    result = lclstreamer(Path.cwd(), "--help")
    assert result.returncode == 0 and "default: ./lclstreamer.yaml" in " ".join(
        result.stdout.split()
    )


def test_emit_line_writes_a_line_to_stderr_in_one_write(monkeypatch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Ranks share the job's log: a line written in two pieces (``print`` writes the text, then
    the newline) lets another rank's line land mid-line, as a standby's address line did in CI."""
    import io
    import os

    from airflow_provider_lclstream.protocol import emit_line

    writes: list[bytes] = []
    real_write = os.write

    def recording_write(fd: int, data: bytes) -> int:
        writes.append(bytes(data))
        return real_write(fd, data)

    with open(tmp_path / "log", "wb", buffering=0) as raw:
        stream = io.TextIOWrapper(io.BufferedWriter(raw), write_through=True)  # type: ignore[arg-type]
        stream.write("pending ")  # buffered text goes out first, on its own
        monkeypatch.setattr(os, "write", recording_write)
        emit_line("lclstreamer: standby on host vm port 1", stream)
        monkeypatch.undo()
    assert writes == [b"lclstreamer: standby on host vm port 1\n"]
    assert (tmp_path / "log").read_text() == "pending lclstreamer: standby on host vm port 1\n"
