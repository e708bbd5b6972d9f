"""The LCLStreamer config corpora: the project's own, and upstream's when one is named.

The project corpus (``tests/data/streamer-configs``) ships with the repository, so the tests run
from a plain clone. ``$LCLSTREAM_UPSTREAM_CONFIGS`` may name a folder of real upstream files
(``flat/`` and ``sectioned/``); the parse, round-trip and localhost tests then run over those too.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
PROJECT_CORPUS = REPO / "tests" / "data" / "streamer-configs"
UPSTREAM_ENV = "LCLSTREAM_UPSTREAM_CONFIGS"
FORMATS = ("flat", "sectioned")


def corpus_files(root: Path) -> list[Path]:
    """Every configuration file under ``root/flat`` and ``root/sectioned``, sorted."""
    return sorted(
        p for sub in FORMATS if (root / sub).is_dir() for p in (root / sub).iterdir() if p.is_file()
    )


def upstream_dir() -> Path | None:
    """The folder ``$LCLSTREAM_UPSTREAM_CONFIGS`` names, or None when it is unset or empty.

    A folder that lacks ``flat/`` or ``sectioned/``, or holds no files, fails the collection
    with a message naming the variable: a named corpus that is not checked is a silent gap.
    """
    value = os.environ.get(UPSTREAM_ENV, "").strip()
    if not value:
        return None
    path = Path(value).expanduser().resolve()
    if not path.is_dir():
        pytest.fail(
            f"{UPSTREAM_ENV}={value}: no such folder ({path}); fix or unset it", pytrace=False
        )
    missing = [sub for sub in FORMATS if not (path / sub).is_dir()]
    if missing:
        pytest.fail(
            f"{UPSTREAM_ENV}={value}: {path} has no {' or '.join(f'{m}/' for m in missing)} "
            "folder; point it at a corpus with flat/ and sectioned/, or unset it",
            pytrace=False,
        )
    if not corpus_files(path):
        pytest.fail(f"{UPSTREAM_ENV}={value}: {path} holds no config files", pytrace=False)
    return path


def labelled_files() -> list[tuple[str, Path]]:
    """(id, path) for the project corpus, then the upstream corpus when one is named."""
    cases = [(f"{p.parent.name}/{p.name}", p) for p in corpus_files(PROJECT_CORPUS)]
    upstream = upstream_dir()
    if upstream is not None:
        cases += [(f"upstream/{p.parent.name}/{p.name}", p) for p in corpus_files(upstream)]
    return cases


TEMPLATE_VALUES: dict[str, str] = {
    "source_identifier": "exp=mfxl1002223,run=8",
    "areadetector_name": "epix10k2M",
    "areadetector_field": "raw.calib",
    "photon_wavelength_pv": "MFX:BEAM:WAVELENGTH",
    "ebeam_detector": "ebeam",
    "batch_size": "4",
    "polarization_fraction": "0.95",
    "polarization_axis": "[0.0, 1.0, 0.0]",
    "collection_rate": "30Hz",
    "out_url": "tcp://127.0.0.1:5004",
}
"""Values for ``flat/psana2-simplon-template.yml``; upstream's Simplon template uses the same names.

Handlers point at 127.0.0.1.
"""
