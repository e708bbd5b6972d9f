"""``ElogHook``: ARP job counters and run parameters in the LCLS Elog, from Airflow tasks.

A thin face over :class:`airflow_provider_lclstream.arp.elog.ElogClient` (plain ``httpx``, also
used by the ``lclstream-arp-launch`` CLI without Airflow).

Connection ``lclstream_elog``: host = logbook base URL (for run parameters), password = the
``Authorization`` header value; extras ``counters_url``, ``verify``, ``timeout``,
``run_params_template``. Without a connection (``elog_conn_id=None``) the hook takes
``counters_url``/``authorization`` from its arguments, else from ``JID_UPDATE_COUNTERS`` and
``Authorization`` in the environment, as ARP sets them. The connection's fields and form are
defined by :class:`~airflow_provider_lclstream.config.connections.ElogSettings`.
"""

from __future__ import annotations

import logging
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from airflow_provider_lclstream.arp.elog import ElogClient, ElogError
from airflow_provider_lclstream.config.connections import ElogSettings
from airflow_provider_lclstream.transfer.report import elog_counters, summary_line

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow.sdk import Connection

    from airflow_provider_lclstream.arp.elog import Counters

_EXTRA_KEYS = ElogSettings.extra_keys()
log = logging.getLogger(__name__)


def client_from_connection(conn: Connection, **overrides: Any) -> ElogClient:
    """Build the client from a ``lclstream_elog`` connection; non-None ``overrides`` win."""
    extra = conn.extra_dejson or {}
    unknown = sorted(set(extra) - set(_EXTRA_KEYS))
    if unknown:
        raise ValueError(
            f"connection {conn.conn_id!r} (lclstream_elog): unknown extra keys {unknown}; "
            f"known: {', '.join(_EXTRA_KEYS)}"
        )
    host = conn.host or None
    if host and "://" not in host:
        host = f"{conn.schema or 'https'}://{host}"
    values: dict[str, Any] = {"base_url": host, "authorization": conn.password or None}
    # an empty form field is saved as null or "": unset
    values.update({k: extra[k] for k in _EXTRA_KEYS if extra.get(k) not in (None, "")})
    if "timeout" in values:
        values["timeout"] = float(values["timeout"])
    values.update({k: v for k, v in overrides.items() if v is not None})
    return ElogClient(**values)


class ElogHook(BaseHook):
    """Post ARP counters (``post_counters``) and run parameters (``post_run_params``).

    The connection is read on first use, never in ``__init__``. Errors raise
    :class:`~airflow_provider_lclstream.arp.elog.ElogError`.
    """

    conn_name_attr = "elog_conn_id"
    default_conn_name = "lclstream_elog_default"
    conn_type = ElogSettings.conn_type
    hook_name = ElogSettings.hook_name

    def __init__(
        self,
        elog_conn_id: str | None = None,
        *,
        counters_url: str | None = None,
        base_url: str | None = None,
        authorization: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.elog_conn_id = elog_conn_id
        self._overrides = {
            "counters_url": counters_url,
            "base_url": base_url,
            "authorization": authorization,
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(elog_conn_id={self.elog_conn_id!r})"

    @cached_property
    def client(self) -> ElogClient:
        if self.elog_conn_id:
            conn = self.get_connection(self.elog_conn_id)
            return client_from_connection(conn, **self._overrides)
        return ElogClient.from_env(None, **self._overrides)

    def get_conn(self) -> ElogClient:
        return self.client

    def post_counters(self, counters: Counters) -> None:
        """Replace the job's counters in the Elog: ``{"Events": 1200, "State": "running"}``."""
        self.client.post_counters(counters)

    def post_run_params(self, experiment: str, run: int, params: Mapping[str, Any]) -> None:
        """Add run parameters to ``experiment`` run ``run`` in the logbook."""
        self.client.post_run_params(experiment, run, params)

    def test_connection(self) -> tuple[bool, str]:
        """Check the configuration only: a test post would overwrite a job's counters."""
        try:
            client = self.client
        except Exception as err:
            return False, f"{type(err).__name__}: {err}"
        if not (client.counters_url or client.base_url):
            return False, "neither a counters URL (extra counters_url) nor a logbook URL (host)"
        return True, "Elog connection configured (nothing was posted)"


def report_transfer(stats: dict[str, Any], conf: Mapping[str, Any]) -> dict[str, Any]:
    """Log a finished transfer's numbers; with ``conf["jid_update_counters"]`` post them to the
    ARP as counters (its ``Authorization`` comes from the Elog connection
    ``conf["elog_conn_id"]``, never from conf)."""
    log.info("transfer finished: %s", summary_line(stats))
    url = conf.get("jid_update_counters")
    if url:
        ElogHook(conf.get("elog_conn_id"), counters_url=str(url)).post_counters(
            elog_counters(stats)
        )
    return stats


__all__ = ["ElogError", "ElogHook", "client_from_connection", "report_transfer"]
