"""LCLS ARP (Automatic Run Processing) face: the batch-job launcher and the Elog counters client.

Nothing here imports Airflow: the launcher runs in an ARP batch job and talks to Airflow over its
REST API only.
"""

from __future__ import annotations
