"""Where a browser shows a transfer: the transfers DAG and its page in Airflow's API server.

Plain strings, no Airflow: the extra links (``links.py``), the API and its plugin
all read them from here.
"""

from __future__ import annotations

from urllib.parse import quote, urljoin

#: The DAG whose runs are transfers (the transfer API creates and lists its runs).
TRANSFER_DAG_ID = "lclstream_transfer"
#: Where the API plugin mounts the transfer API and page inside Airflow's API server.
URL_PREFIX = "/lclstream"
#: The transfers page; ``?id=<run id>`` selects one transfer.
UI_PATH = f"{URL_PREFIX}/ui"


def transfer_page_path(run_id: str) -> str:
    """``/lclstream/ui?id=<run id>``, the run id URL-encoded."""
    return f"{UI_PATH}?id={quote(run_id, safe='')}"


def absolute(base_url: str | None, path: str) -> str:
    """``path`` under ``base_url`` (Airflow's ``[api] base_url``, which may hold a sub-path), as
    Airflow builds its own links; without a base URL the path stays relative to the server."""
    base = (base_url or "/").rstrip("/") + "/"
    return urljoin(base, path.lstrip("/"))
