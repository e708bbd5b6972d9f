"""W-stage output: CXI-style HDF5 peak lists that CrystFEL reads with ``--peaks=cxi``.

CrystFEL (libcrystfel ``image_hdf5_read_peaks_cxi``) reads, under the geometry file's
``peak_list`` (here ``/entry_1/result_1``): ``nPeaks`` (events,) and ``peakXPosRaw``,
``peakYPosRaw``, ``peakTotalIntensity`` (events, max_peaks), row = the event's index along the
data's placeholder axis. X is the fast-scan (column) and Y the slow-scan (row) position in the
data array, pixel centres (CrystFEL adds its half-pixel shift itself).

Panels are stacked along slow-scan as Cheetah's "raw" layout does: panel ``p``'s row ``y`` is
``p * H + y``, and ``/entry_1/data_1/data`` (with ``save_frames``) is ``(events, P * H, W)``;
a geometry file gives each panel ``min_ss = p * H``, ``max_ss = (p + 1) * H - 1``.
``peakSegPosRaw`` (the panel), ``/entry_1/event_id`` and ``/LCLS/timestamp`` are extra.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

if TYPE_CHECKING:
    from airflow_provider_lclstream.inference.peaks import Peaks

RESULT = "/entry_1/result_1"
PEAK_FIELDS = ("peakXPosRaw", "peakYPosRaw", "peakTotalIntensity", "peakSegPosRaw")


class CxiWriter:
    """Append events to ``DIR/PREFIX_NNNN.cxi`` files of at most ``events_per_file`` events.

    A file is written as ``.name.tmp`` and renamed when full or closed, so a file with the
    final name is complete.
    """

    def __init__(
        self,
        out: str | Path,
        prefix: str,
        *,
        events_per_file: int,
        max_peaks: int,
        save_frames: bool,
        keep_logits: bool,
        attrs: dict[str, Any],
    ) -> None:
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self.events_per_file = events_per_file
        self.max_peaks = max_peaks
        self.save_frames = save_frames
        self.keep_logits = keep_logits
        self.attrs = attrs
        self.files: list[str] = []
        self.rows = 0
        self.truncated = 0
        self._file: h5py.File | None = None
        self._row = 0

    def _open(
        self, frame_shape: tuple[int, ...] | None, logits_shape: tuple[int, ...] | None
    ) -> h5py.File:
        final = self.out / f"{self.prefix}_{len(self.files):04d}.cxi"
        self._final, self._temp = final, final.with_name(f".{final.name}.tmp")
        f = h5py.File(self._temp, "w")
        n, m = self.events_per_file, self.max_peaks
        result = f.create_group(RESULT)
        result.create_dataset("nPeaks", (0,), maxshape=(n,), dtype=np.int32, chunks=(min(n, 1024),))
        for name in PEAK_FIELDS:
            result.create_dataset(name, (0, m), maxshape=(n, m), dtype=np.float32,
                                  chunks=(min(n, 64), m), fillvalue=0)  # fmt: skip
        f.create_dataset("/entry_1/event_id", (0,), maxshape=(n,), dtype=h5py.string_dtype(),
                         chunks=(min(n, 1024),))  # fmt: skip
        f.create_dataset("/LCLS/timestamp", (0,), maxshape=(n,), dtype=np.float64,
                         chunks=(min(n, 1024),))  # fmt: skip
        if frame_shape is not None:
            f.create_dataset("/entry_1/data_1/data", (0, *frame_shape), maxshape=(n, *frame_shape),
                             dtype=np.float32, chunks=(1, *frame_shape))  # fmt: skip
        if logits_shape is not None:
            result.create_dataset("logits", (0, *logits_shape), maxshape=(n, *logits_shape),
                                  dtype=np.float32, chunks=(1, *logits_shape))  # fmt: skip
        for key, value in self.attrs.items():
            f.attrs[key] = value
        self._row = 0
        return f

    def append(
        self,
        peaks: Peaks,
        event_id: str,
        timestamp: float,
        panel_height: int,
        frame: np.ndarray | None = None,
        logits: np.ndarray | None = None,
    ) -> None:
        """One event; ``frame`` (P * H, W) with ``save_frames``; ``logits`` with ``keep_logits``."""
        if self._file is None:
            self._file = self._open(
                frame.shape if self.save_frames and frame is not None else None,
                logits.shape if self.keep_logits and logits is not None else None,
            )
        f, row = self._file, self._row
        count = min(len(peaks), self.max_peaks)
        self.truncated += len(peaks) - count
        for path in (f"{RESULT}/nPeaks", "/entry_1/event_id", "/LCLS/timestamp"):
            f[path].resize((row + 1,))
        f[f"{RESULT}/nPeaks"][row] = count
        f["/entry_1/event_id"][row] = event_id
        f["/LCLS/timestamp"][row] = timestamp
        values = {
            "peakXPosRaw": peaks.x,
            "peakYPosRaw": peaks.panel * panel_height + peaks.y,
            "peakTotalIntensity": peaks.intensity,
            "peakSegPosRaw": peaks.panel,
        }
        for name in PEAK_FIELDS:
            dataset = f[f"{RESULT}/{name}"]
            dataset.resize((row + 1, self.max_peaks))
            line = np.zeros(self.max_peaks, dtype=np.float32)
            line[:count] = values[name][:count]
            dataset[row] = line
        if "/entry_1/data_1/data" in f and frame is not None:
            f["/entry_1/data_1/data"].resize((row + 1, *frame.shape))
            f["/entry_1/data_1/data"][row] = frame
        if f"{RESULT}/logits" in f and logits is not None:
            f[f"{RESULT}/logits"].resize((row + 1, *logits.shape))
            f[f"{RESULT}/logits"][row] = logits
        self._row += 1
        self.rows += 1
        if self._row >= self.events_per_file:
            self._close_file()

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            os.replace(self._temp, self._final)
            self.files.append(str(self._final))
            self._file = None

    def close(self) -> list[str]:
        self._close_file()
        return self.files


def read_peaks(path: str | Path) -> dict[str, np.ndarray]:
    """A CXI file's peak lists and event ids (for tests and checks)."""
    with h5py.File(path, "r") as f:
        out = {name: f[f"{RESULT}/{name}"][()] for name in ("nPeaks", *PEAK_FIELDS)}
        out["event_id"] = np.asarray(f["/entry_1/event_id"].asstr()[()])
        out["timestamp"] = f["/LCLS/timestamp"][()]
        if "/entry_1/data_1/data" in f:
            out["data"] = f["/entry_1/data_1/data"][()]
        if f"{RESULT}/logits" in f:
            out["logits"] = f[f"{RESULT}/logits"][()]
    return out
