"""Receiver library and CLI: pull messages from producers or a buffer until every producer ended."""

from __future__ import annotations

from airflow_provider_lclstream.consumer.receiver import Message, ReceiveReport, receive_messages

__all__ = ["Message", "ReceiveReport", "receive_messages"]
