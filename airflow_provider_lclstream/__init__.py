"""Apache Airflow 3 provider for LCLStream: stream LCLS data to remote analysis as Airflow work.

Importing the package is cheap: heavy pieces (numpy, h5py, psana, mpi4py, Airflow) are imported by
the modules that need them.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
