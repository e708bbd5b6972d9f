"""The detectors the synthetic source can imitate, and the synthetic frames' defaults.

The one owner of both: the config model (:class:`~.streamer_components.SyntheticDetector`), the
frame generator (:class:`~airflow_provider_lclstream.streamer.sources.synthetic.SyntheticFrames`),
the transfer request's synthetic stream and the generated reference all read them from here.

The defaults are the config model's (noise 5, 20 peaks per frame), which every configured stream
has always used; the generator's own older defaults (noise 8, 30 peaks) were only reached by the
benchmarks that call it directly.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

DetectorName = Literal["epix10k2M", "jungfrau4M", "jungfrau1M", "rayonix"]
"""A detector :class:`SyntheticDetector` can imitate (its ``detector`` key)."""

DETECTOR_SHAPES: Final[dict[DetectorName, tuple[int, ...]]] = {
    "epix10k2M": (16, 352, 384),
    "jungfrau4M": (8, 512, 1024),
    "jungfrau1M": (2, 512, 1024),
    "rayonix": (1920, 1920),
}
"""Raw (unassembled) frame shape of each detector."""

DEFAULT_DETECTOR: Final[DetectorName] = "epix10k2M"
"""The detector of synthetic streams that name none (or one not in :data:`DETECTOR_SHAPES`)."""

SYNTHETIC_DTYPE: Final = "uint16"
SYNTHETIC_PEDESTAL: Final = 100.0
SYNTHETIC_NOISE: Final = 5.0
"""Standard deviation of the Gaussian noise around the pedestal (ADU)."""
SYNTHETIC_PEAKS_PER_FRAME: Final = 20
SYNTHETIC_PEAK_INTENSITY: Final = 2000.0
"""Height (ADU) of the strongest peak; each peak is scaled by a random 0.2..1."""

assert set(get_args(DetectorName)) == set(DETECTOR_SHAPES), "DetectorName and shapes disagree"


def detector_shape(name: str) -> tuple[int, ...] | None:
    """The raw frame shape of detector ``name``, or None when it is not one we know."""
    return DETECTOR_SHAPES.get(name)  # type: ignore[call-overload]
