"""NNG and ZeroMQ behind one small interface: a pushing ``Sender`` and a pulling ``Receiver``."""

from __future__ import annotations

from airflow_provider_lclstream.transports.base import (
    LIBRARIES,
    Receiver,
    Sender,
    open_receiver,
    open_sender,
)

__all__ = ["LIBRARIES", "Receiver", "Sender", "open_receiver", "open_sender"]
