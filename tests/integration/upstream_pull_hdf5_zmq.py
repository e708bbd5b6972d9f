"""Upstream LCLStreamer's ``examples/pull_script_hdf5_zmq.py``, its logic unchanged.

Only the address is a command-line argument (upstream binds ``tcp://127.0.0.1:12321``). It
binds a PULL socket and, forever, opens each message with ``h5py.File(BytesIO(msg))``, reads the
first top-level dataset, adds its length to a count and prints it, with no ``try``: a message
that is not an HDF5 image with a dataset first makes it crash, as it would upstream's.
"""

from __future__ import annotations

import sys
from io import BytesIO
from typing import cast

import hdf5plugin  # noqa: F401
from h5py import Dataset, File
from zmq import PULL, Context, Socket

context: Context[Socket[bytes]] = Context()
socket: Socket[bytes] = context.socket(PULL)
socket.bind(sys.argv[1] if len(sys.argv) > 1 else "tcp://127.0.0.1:12321")
count = 0
print("Listening....")
while True:
    msg = socket.recv()
    fh: File = File(BytesIO(msg))
    dataset: Dataset = cast(Dataset, fh[list(fh.keys())[0]])
    content: int = dataset[:].shape[0]
    fh.close()
    count += content
    print(f"Received {count} messages")
    sys.stdout.flush()
