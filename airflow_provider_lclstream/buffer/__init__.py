"""The NNG-Stream role: a bounded FIFO between parallel producers and consumers.

``Buffer(BufferConfig(...)).run()`` or the ``lclstream-buffer`` command; see docs/buffer.md.
"""

from __future__ import annotations

from airflow_provider_lclstream.buffer.config import BufferConfig, parse_size
from airflow_provider_lclstream.buffer.core import Buffer

__all__ = ["Buffer", "BufferConfig", "parse_size"]
