"""Where the upstream configuration corpus lives (see /work/shared/upstream-configs/README.md)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


def corpus_dir() -> Path:
    """``$LCLSTREAM_UPSTREAM_CONFIGS`` or ``<repo>/../shared/upstream-configs``; missing fails."""
    env = os.environ.get("LCLSTREAM_UPSTREAM_CONFIGS")
    path = Path(env) if env else REPO.parent / "shared" / "upstream-configs"
    if not (path / "flat").is_dir() or not (path / "sectioned").is_dir():
        pytest.fail(
            f"upstream config corpus not found at {path} (needs flat/ and sectioned/); "
            "set LCLSTREAM_UPSTREAM_CONFIGS to its location"
        )
    return path


def corpus_files() -> list[Path]:
    """Every configuration file of the corpus (flat and sectioned), sorted."""
    root = corpus_dir()
    files = sorted(
        p for sub in ("flat", "sectioned") for p in (root / sub).iterdir() if p.is_file()
    )
    if not files:
        pytest.fail(f"upstream config corpus at {root} holds no files")
    return files


TEMPLATE_VALUES: dict[str, str] = {
    "source_identifier": "exp=mfx100852324,run=355",
    "areadetector_name": "jungfrau",
    "areadetector_field": "raw.calib",
    "photon_wavelength_pv": "SIOC:SYS0:ML00:AO192",
    "ebeam_detector": "ebeamh",
    "batch_size": "1",
    "polarization_fraction": "0.99",
    "polarization_axis": "[1.0, 0.0, 0.0]",
    "collection_rate": "120Hz",
    "out_url": "tcp://127.0.0.1:5001",
}
"""Values for ``flat/lclstreamer-psana2-simplon.yml`` (handlers point at 127.0.0.1)."""
