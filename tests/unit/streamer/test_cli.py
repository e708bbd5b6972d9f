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
