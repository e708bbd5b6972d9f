"""Configuration models: the LCLStreamer YAML (both upstream formats) and its loader.

Import from the submodules: ``config.streamer`` (models) and ``config.loader`` (files).
"""

from __future__ import annotations
