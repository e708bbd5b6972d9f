"""Streaming PeakNet inference on Ray: buffer -> S (readers) -> Q1 -> P (model) -> Q2 -> W (CXI).

Needs the ``inference`` extra (torch, Ray, transformers, safetensors, scipy); nothing heavy is
imported here. Entry points: ``lclstream-infer`` (``inference/cli.py``) and
``inference.pipeline.run_pipeline``.
"""

from __future__ import annotations
