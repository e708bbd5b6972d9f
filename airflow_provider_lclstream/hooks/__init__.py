"""Hooks: one Airflow connection -> one client."""

from __future__ import annotations
