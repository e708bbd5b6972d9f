"""Which example configs run here, and how; which need the facility, and why.

Every file of the config corpus (``tests/data/streamer-configs``, and upstream's when
``$LCLSTREAM_UPSTREAM_CONFIGS`` names it) is in :data:`EXAMPLES`, keyed by its corpus label
(``flat/x.yaml``, ``upstream/sectioned/y.yaml``). A :class:`Runs` entry is run to completion by
``test_example_configs_run.py``: with only ``source_identifier`` changed (the example's own
``exp``/``run`` plus ``dir=`` where the xtc2 data was written), network handlers pointed at
receivers on 127.0.0.1 and file handlers writing under the test's working directory. A
:class:`NeedsFacility` entry says why it cannot run without SLAC. docs/streamer-config.md
("Upstream examples that run here") shows the same table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.psana_names import CSPAD, PVS


@dataclass(frozen=True)
class Runs:
    """Runs here: on ``ranks`` MPI ranks; psana2 examples on xtcwriter data of ``events``
    events with ``renames`` (xtcwriter's name -> the example's) applied."""

    ranks: int = 1
    renames: dict[str, str] = field(default_factory=dict)
    events: int = 12


@dataclass(frozen=True)
class NeedsFacility:
    reason: str


PSANA1 = NeedsFacility(
    "psana1 (LCLS-I): Psana1EventSource needs psana1, which is not installable here (no PyPI "
    "wheel; SLAC's conda builds), and LCLS-I xtc runs, which xtcwriter (psana2) cannot write"
)
CALIB_IMAGE = NeedsFacility(
    "raw.image (assembled_detector_data) needs the detector's geometry from the facility's "
    "calibration database; offline the engine refuses it unless the config says "
    "calibration: skip"
)
RIX_TYPES = NeedsFacility(
    "detector types xtcwriter does not write: andor (raw.value), gmd "
    "(raw.milliJoulesPerPulse); xtcwriter's hsd (version 0.0.0) has only raw.calib, not "
    "raw.peaks/raw.waveforms"
)
TMO_TYPES = NeedsFacility(
    "detector types xtcwriter does not write: gmd and xgmd (raw.milliJoulesPerPulse); "
    "xtcwriter's hsd (version 0.0.0) has only raw.calib, not raw.peaks/raw.waveforms"
)
SIMPLON = NeedsFacility(
    "detector_geometry reads raw._det_geotxt_default, which psana has for the facility's "
    "area detector types (epix10k, jungfrau) but not for xtcwriter's cspad; beam_data reads an "
    "ebeam detector, a type xtcwriter does not write"
)

EXAMPLES: dict[str, Runs | NeedsFacility] = {
    # the project's corpus
    "flat/internal-random-and-constants.yaml": Runs(),
    "flat/internal-to-files.yaml": Runs(),
    "flat/psana1-peaknet.yaml": PSANA1,
    "flat/psana1-xpp.yaml": PSANA1,
    "flat/psana2-mfx.yaml": Runs(renames={CSPAD: "epix10k2M", PVS[0]: "MFX:BEAM:ENERGY"}),
    "flat/psana2-raw-distributed.yaml": Runs(ranks=8, renames={CSPAD: "epix10k2M"}, events=24),
    "flat/psana2-rix.yaml": RIX_TYPES,
    "flat/psana2-simplon-template.yml": SIMPLON,
    "sectioned/internal-two-handlers.yaml": Runs(),
    "sectioned/psana1-legacy-classes.yaml": PSANA1,
    "sectioned/psana1-xpp.yaml": PSANA1,
    "sectioned/psana2-mfx.yaml": CALIB_IMAGE,
    "sectioned/psana2-rix.yaml": Runs(events=30),
    # upstream's (../shared/upstream-configs), checked when $LCLSTREAM_UPSTREAM_CONFIGS is set
    "upstream/flat/lclstreamer-internal.yaml": Runs(),
    "upstream/flat/lclstreamer-psana1-to-sdfada-with-preprocessing.yaml": PSANA1,
    "upstream/flat/lclstreamer-psana1-to-sdfada.yaml": PSANA1,
    "upstream/flat/lclstreamer-psana1.yaml": PSANA1,
    "upstream/flat/lclstreamer-psana2-mfx.yaml": Runs(
        renames={CSPAD: "jungfrau", PVS[0]: "SIOC:SYS0:ML00:AO192"}, events=24
    ),
    "upstream/flat/lclstreamer-psana2-simplon.yml": SIMPLON,
    "upstream/flat/lclstreamer-psana2-tmo.yaml": TMO_TYPES,
    "upstream/flat/producer_raw.yaml": Runs(ranks=4, renames={CSPAD: "jungfrau"}),
    "upstream/sectioned/lclstreamer-psana1.yaml": PSANA1,
    "upstream/sectioned/lclstreamer-psana2-mfx.yaml": CALIB_IMAGE,
    "upstream/sectioned/lclstreamer-psana2-tmo.yaml": Runs(),
    "upstream/sectioned/lclstreamer-quynh.yaml": PSANA1,
}
