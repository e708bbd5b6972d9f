"""A consumer for AI inference: gather frames into fixed-size batches for a GPU model.

``python -m airflow_provider_lclstream.consumer.peaknet --url URL --batch 32`` reads messages
(``/data/data``, frames along axis 0), pads/crops them to the model's input and hands each
``(batch, 1, H, W)`` float32 array to ``infer`` — here a placeholder that reports peaks found by
a threshold, to be replaced by the PeakNet model call on the GPU node.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

import numpy as np

from airflow_provider_lclstream.consumer.receiver import ReceiveReport, receive_messages

if TYPE_CHECKING:
    from collections.abc import Iterator


def batches(
    frames: Iterator[np.ndarray], size: int, height: int, width: int
) -> Iterator[np.ndarray]:
    """Fixed-size float32 batches ``(size, 1, height, width)`` of 2-d panels; the last is short."""
    pending: list[np.ndarray] = []
    for frame in frames:
        panels = frame.reshape(-1, *frame.shape[-2:])
        for panel in panels:
            out = np.zeros((height, width), dtype=np.float32)
            h, w = min(height, panel.shape[0]), min(width, panel.shape[1])
            out[:h, :w] = panel[:h, :w]
            pending.append(out)
            if len(pending) == size:
                yield np.stack(pending)[:, np.newaxis]
                pending = []
    if pending:
        yield np.stack(pending)[:, np.newaxis]


def infer(batch: np.ndarray, threshold: float) -> int:
    """Placeholder for the model: the number of pixels above ``threshold`` in the batch."""
    return int(np.count_nonzero(batch > threshold))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lclstream-peaknet-consumer", description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--transport", choices=["zmq", "nng"], default="zmq")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--threshold", type=float, default=1000.0)
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    report = ReceiveReport(1)

    def frames() -> Iterator[np.ndarray]:
        for message in receive_messages(
            args.url, args.transport, bind=False, timeout_s=args.timeout, report=report
        ):
            data = message.data.get("/data/data")
            if data is not None:
                yield from data

    inferred = hits = 0
    for batch in batches(frames(), args.batch, args.height, args.width):
        inferred += batch.shape[0]
        hits += infer(batch, args.threshold)
    print(json.dumps({"panels": inferred, "bright_pixels": hits, **report.summary()}))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
