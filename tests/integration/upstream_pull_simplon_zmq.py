"""Upstream LCLStreamer's ``examples/pull_script_simplon_zmq.py``, its logic unchanged.

Only the address is a command-line argument (upstream binds ``tcp://127.0.0.1:12321``), so
that tests can pick a free port. It binds a PULL socket and, forever, reads each message as one
header byte then a CBOR map (upstream's ``cbor`` library), printing the header, ``timestamp`` and
``type``. A message of any other shape makes it crash, as it would upstream's.
"""

from __future__ import annotations

import sys
from typing import Any, cast

from cbor import loads  # type: ignore[import-untyped]
from zmq import PULL, Context, Socket

context: Context[Socket[bytes]] = Context()
socket: Socket[bytes] = context.socket(PULL)
socket.bind(sys.argv[1] if len(sys.argv) > 1 else "tcp://127.0.0.1:12321")

count: int = 0
print("Listening....")
while True:
    msg: bytes = socket.recv()
    header: str = chr(msg[0])
    content: dict[str, Any] = cast(dict[str, Any], loads(msg[1:]))
    print("Message Received:")
    print(f"  Header: {header}")
    print(f"  Timestamp: {content['timestamp']}")
    print(f"  Type: {content['type']}")
    sys.stdout.flush()
