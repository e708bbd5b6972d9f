"""``lclstream-infer``: PeakNet inference on a stream, on Ray, writing CXI peak lists.

Examples:

    # read the buffer's output with 2 readers, local Ray, CPU or the node's GPUs
    lclstream-infer --url tcp://buffer-host:5001 --checkpoint peaknet.safetensors \\
        --model-config peaknet.yaml --out /data/peaks

    # on an existing Ray cluster (or set RAY_ADDRESS), 4 readers, 1024 x 1024 input
    lclstream-infer --url "$LCLSTREAM_URL" --address auto --readers 4 \\
        --height 1024 --width 1024 --checkpoint model.pt --model-config model.yaml --out peaks

    # a seeded random checkpoint for a model config (tests and demos only)
    lclstream-infer --write-random-checkpoint tiny.safetensors --model-config tiny.yaml

Prints one JSON line (``InferenceSummary``: frames in, inferred, hits, peaks, files, Q1
occupancy, seconds per batch per stage). Exit status: 0 when every frame was inferred and
written; 1 when the run failed or lost frames (the summary says which); 2 on bad input
(arguments, model config, checkpoint, frames of the wrong shape or dtype).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from pydantic import ValidationError

from airflow_provider_lclstream.exceptions import LCLStreamError

INPUT_ERRORS = {"FrameError", "CheckpointError", "ModelConfigError"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lclstream-infer",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--url", default=os.environ.get("LCLSTREAM_URL"),
                   help="the buffer's output URL (default $LCLSTREAM_URL)")  # fmt: skip
    p.add_argument("--transport", choices=["zmq", "nng"],
                   default=os.environ.get("LCLSTREAM_TRANSPORT", "zmq"))  # fmt: skip
    p.add_argument("--checkpoint", help="PeakNet weights: .safetensors or a torch file")
    p.add_argument("--model-config", help="PeakNet config (YAML/JSON: backbone, bifpn, seg_head)")
    p.add_argument("--out", default=".", help="directory for the CXI files (.)")
    p.add_argument("--prefix", default="peaks", help="CXI file name prefix (peaks)")
    p.add_argument("--field", default="/data/data", help="frames dataset in a message")
    p.add_argument("--timestamp-field", default="/data/timestamp")
    p.add_argument("--readers", type=int, default=2, help="S-stage reader actors (2)")
    p.add_argument("--batch-size", type=int, default=8, help="frames per batch (8)")
    p.add_argument("--height", type=int, default=512, help="model input height (512)")
    p.add_argument("--width", type=int, default=512, help="model input width (512)")
    p.add_argument("--pad-style", choices=["bottom-right", "center"], default="bottom-right")
    p.add_argument("--q1-size", type=int, default=8, help="batches Q1 holds (8)")
    p.add_argument("--p-actors", type=int, help="P actors (default: one per GPU, else 1)")
    p.add_argument("--writers", type=int, default=1, help="W actors (1)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--no-instance-norm", action="store_true",
                   help="feed raw values (default: panels scaled to mean 0, std 1)")  # fmt: skip
    p.add_argument("--min-peaks", type=int, default=10, help="a hit has >= this many peaks (10)")
    p.add_argument("--events-per-file", type=int, default=1000)
    p.add_argument("--save-frames", action="store_true", help="write the frames of written events")
    p.add_argument("--all-events", action="store_true", help="write every event, not only hits")
    p.add_argument("--keep-logits", action="store_true",
                   help="also write the model's logits per event (debugging; large)")  # fmt: skip
    p.add_argument("--timeout", type=float, default=600.0,
                   help="longest wait for a message from the buffer, s (600)")  # fmt: skip
    p.add_argument("--address", default=None,
                   help="Ray cluster address (default $RAY_ADDRESS, else a local Ray)")  # fmt: skip
    p.add_argument("--max-restarts", type=int, default=2, help="P actor restarts (2)")
    p.add_argument("--summary", help="also write the summary JSON to this file")
    p.add_argument("--write-random-checkpoint", metavar="PATH",
                   help="write random weights for --model-config to PATH, exit")  # fmt: skip
    return p


def fail(message: str, code: int = 2) -> int:
    print(f"lclstream-infer: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        from airflow_provider_lclstream.inference.errors import require_inference_extra

        for module in ("torch", "ray", "transformers", "safetensors", "scipy"):
            require_inference_extra(module)
        from airflow_provider_lclstream.inference.config import (
            PipelineSettings,
            load_model_config,
        )

        model = load_model_config(args.model_config)
        if args.write_random_checkpoint:
            from airflow_provider_lclstream.inference.checkpoint import random_checkpoint

            path = random_checkpoint(model, args.write_random_checkpoint)
            print(json.dumps({"checkpoint": str(path)}))
            return 0
        if not args.checkpoint:
            return fail("--checkpoint is required (a .safetensors or torch file)")
        if not args.url:
            return fail("--url is required (or set LCLSTREAM_URL)")
        try:
            settings = PipelineSettings(
                url=args.url, transport=args.transport, field=args.field,
                timestamp_field=args.timestamp_field, readers=args.readers,
                batch_size=args.batch_size, height=args.height, width=args.width,
                pad_style=args.pad_style, q1_size=args.q1_size, p_actors=args.p_actors,
                writers=args.writers, device=args.device, compile=args.compile,
                instance_norm=not args.no_instance_norm, min_peaks=args.min_peaks,
                events_per_file=args.events_per_file, save_frames=args.save_frames,
                all_events=args.all_events, keep_logits=args.keep_logits, out=args.out,
                prefix=args.prefix, timeout_s=args.timeout, max_restarts=args.max_restarts,
                checkpoint=args.checkpoint, model=model,
            )  # fmt: skip
        except ValidationError as err:
            problems = "; ".join(
                f"--{str(e['loc'][0]).replace('_', '-')}: {e['msg']}"
                if e["loc"]
                else e["msg"].removeprefix("Value error, ")
                for e in err.errors()
            )
            return fail(problems)
        from airflow_provider_lclstream.inference.pipeline import run_pipeline

        summary = run_pipeline(settings, ray_address=args.address)
    except LCLStreamError as err:
        return fail(str(err), 1 if type(err).__name__ not in INPUT_ERRORS else 2)
    document = summary.model_dump_json()
    if args.summary:
        with open(args.summary, "w") as handle:
            handle.write(document + "\n")
    print(document, flush=True)
    if summary.error:
        code = 2 if summary.error_kind in INPUT_ERRORS else 1
        return fail(summary.error, code)
    return 0


if __name__ == "__main__":
    sys.exit(main())
