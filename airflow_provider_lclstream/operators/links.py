"""The extra links' old home: they live in :mod:`airflow_provider_lclstream.links`, below both
operators and sensors (a sensor must not import an operator module)."""

from __future__ import annotations

from airflow_provider_lclstream.links import TransferLink, airflow_url, task_log_url

__all__ = ["TransferLink", "airflow_url", "task_log_url"]
