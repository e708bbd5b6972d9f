"""Airflow triggers: deferrable-task waits and AssetWatcher event sources."""

from __future__ import annotations
