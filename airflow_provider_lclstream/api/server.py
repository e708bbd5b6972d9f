"""``lclstream-api``: the transfer API as its own HTTPS server, behind certified mutual TLS.

Every connection must present a client certificate signed by a CA in the certified config's
``known_clients/``; the TLS handshake fails otherwise (no HTTP status is ever sent). The
certificate's common name (else its userID) is the caller and becomes the transfer's user.
Users list, read and cancel only their own transfers; ``--admin NAME`` users see all.
Transfers are DAG runs in the Airflow metadata database that ``AIRFLOW_HOME`` configures.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING, Any

from fastapi import HTTPException, Request

from airflow_provider_lclstream.api.app import Principal, build_app

if TYPE_CHECKING:
    import ssl
    from collections.abc import Callable, Iterable
    from pathlib import Path

    import uvicorn
    from fastapi import FastAPI

    from airflow_provider_lclstream.api.store import TransferStore

log = logging.getLogger(__name__)


def identity_from_peer(peer: dict[str, Any]) -> str | None:
    """The common name (else userID) of a subject as ``ssl.getpeercert()`` gives it."""
    names: dict[str, str] = {}
    for rdn in peer.get("subject") or ():
        for key, value in rdn:
            names.setdefault(key, value)
    return names.get("commonName") or names.get("userId") or names.get("userID")


def certificate_principal(admins: Iterable[str] = ()) -> Callable[[Request], Principal]:
    """A FastAPI dependency naming the caller by their verified client certificate."""
    from certified.fast import get_peercert

    admin_set = frozenset(admins)

    def principal(request: Request) -> Principal:
        name = identity_from_peer(get_peercert(request))
        if not name:
            raise HTTPException(401, "a client certificate with a common name is required")
        return Principal(name=name, admin=name in admin_set)

    return principal


def create_standalone_app(store: TransferStore, admins: Iterable[str] = ()) -> FastAPI:
    """The API with certificate identities (serve it with :func:`make_server`)."""
    return build_app(store, certificate_principal(admins), title="LCLStream API")


def server_ssl_context(certified_config: str | Path | None) -> ssl.SSLContext:
    """TLS 1.3 server context: our identity, and client certificates REQUIRED."""
    from certified import Certified

    return Certified(certified_config).ssl_context(False, require_client_cert=True)


def make_server(
    app: FastAPI, host: str, port: int, certified_config: str | Path | None
) -> uvicorn.Server:
    """A uvicorn server for ``app`` over certified mTLS (h11, which exposes the peer cert)."""
    import certified.cert  # noqa: F401  (patches uvicorn's h11 cycle to expose the TLS transport)
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, http="h11", log_level="info")
    config.load()
    config.ssl = server_ssl_context(certified_config)
    return uvicorn.Server(config)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lclstream-api", description="LCLStream transfer API over certified mutual TLS."
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8443)
    p.add_argument(
        "--config", help="certified config directory (default $CERTIFIED_CONFIG, venv/etc)"
    )
    p.add_argument("--admin", action="append", default=[], help="a user who sees all transfers")
    p.add_argument("--dag-id", default=None, help="the transfer DAG (default lclstream_transfer)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    from airflow_provider_lclstream.api.airflow_store import AirflowTransferStore

    store = AirflowTransferStore(args.dag_id) if args.dag_id else AirflowTransferStore()
    app = create_standalone_app(store, args.admin)
    try:
        server = make_server(app, args.host, args.port, args.config)
    except (OSError, KeyError, ValueError) as err:
        print(f"lclstream-api: cannot set up TLS from the certified config: {err}", file=sys.stderr)
        return 2
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
