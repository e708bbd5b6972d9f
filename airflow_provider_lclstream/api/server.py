"""``lclstream-api``: the transfer API as its own HTTPS server, behind certified mutual TLS.

Every connection must present a client certificate signed by a CA in the certified config's
``known_clients/``; the TLS handshake fails otherwise (no HTTP status is ever sent).

The caller is the **name that signing CA was added under** (``known_clients/<name>.crt``), never
the certificate's subject alone: in certified's layout every user holds their own CA key, so a
subject is whatever its holder wrote. A certificate whose subject names a *different* known
client is a forgery and is refused with 403. CAs named with ``--org-ca`` (default ``self``, the
server's own CA, which ``certified introduce`` signs with) are trusted to name their users: for
them the subject's common name (else userID) is the caller.

Users list, read and cancel only their own transfers and subscriptions; ``--admin NAME`` users
see all. Subscriptions are the Airflow Variables the API inside Airflow uses too.
Transfers are DAG runs in the Airflow metadata database that ``AIRFLOW_HOME`` configures.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import HTTPException, Request

from airflow_provider_lclstream.api.app import Principal, build_app
from airflow_provider_lclstream.exceptions import LCLStreamError

if TYPE_CHECKING:
    import ssl
    from collections.abc import Callable, Iterable

    import uvicorn
    from cryptography import x509
    from fastapi import FastAPI

    from airflow_provider_lclstream.api.store import TransferStore
    from airflow_provider_lclstream.api.subscriptions import SubscriptionStore
    from airflow_provider_lclstream.config.consumers import ConsumerTemplates

log = logging.getLogger(__name__)


def identity_from_peer(peer: dict[str, Any]) -> str | None:
    """The common name (else userID) of a subject as ``ssl.getpeercert()`` gives it."""
    names: dict[str, str] = {}
    for rdn in peer.get("subject") or ():
        for key, value in rdn:
            names.setdefault(key, value)
    return names.get("commonName") or names.get("userId") or names.get("userID")


class ForgedIdentity(LCLStreamError, PermissionError):
    """A certificate whose subject names another known client than the CA that signed it."""


@dataclass
class ClientAuthorities:
    """The trusted client CAs of a certified config, by the name each was added under."""

    cas: dict[str, x509.Certificate]
    org_cas: frozenset[str] = field(default_factory=lambda: frozenset({"self"}))

    @classmethod
    def load(cls, known_clients: Path, org_cas: Iterable[str] = ("self",)) -> ClientAuthorities:
        """Read ``known_clients/*.crt`` (and ``*.pem``); the file's stem is the name."""
        from cryptography import x509

        cas = {
            path.stem: x509.load_pem_x509_certificate(path.read_bytes())
            for path in sorted(known_clients.iterdir())
            if path.suffix in (".crt", ".pem")
        }
        return cls(cas, frozenset(org_cas))

    def signer_of(self, leaf: x509.Certificate) -> str | None:
        """The name of the known CA that directly issued ``leaf`` (checked by signature)."""
        from cryptography.exceptions import InvalidSignature

        for name, ca in self.cas.items():
            try:
                leaf.verify_directly_issued_by(ca)
            except (ValueError, TypeError, InvalidSignature):
                continue
            return name
        return None

    def identity(self, der: bytes) -> str:
        """The caller behind a verified client certificate (DER), or raise.

        ``ForgedIdentity`` when the subject names another known client, ``LookupError`` when
        no known CA signed it directly (a chain through an intermediate is not accepted).
        """
        from cryptography import x509

        leaf = x509.load_der_x509_certificate(der)
        signer = self.signer_of(leaf)
        if signer is None:
            raise LookupError("the client certificate was not signed by a known client CA")
        subject = subject_name(leaf)
        if signer in self.org_cas:
            if not subject:
                raise LookupError(f"a certificate from CA {signer!r} must carry a common name")
            return subject
        if subject and subject != signer and subject in self.cas:
            raise ForgedIdentity(
                f"the certificate names {subject!r} but was signed by the CA added as {signer!r}"
            )
        return signer


def subject_name(cert: x509.Certificate) -> str | None:
    """The subject's common name, else its userID."""
    from cryptography.x509.oid import NameOID

    for oid in (NameOID.COMMON_NAME, NameOID.USER_ID):
        values = cert.subject.get_attributes_for_oid(oid)
        if values:
            return str(values[0].value)
    return None


def peer_certificate_der(request: Request) -> bytes | None:
    """The client certificate (DER) of the request's TLS connection, if any."""
    transport = request.scope.get("transport")
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return bytes(der) if der else None


def certificate_principal(
    authorities: ClientAuthorities, admins: Iterable[str] = ()
) -> Callable[[Request], Principal]:
    """A FastAPI dependency naming the caller by the CA that signed their certificate."""
    admin_set = frozenset(admins)

    def principal(request: Request) -> Principal:
        der = peer_certificate_der(request)
        if der is None:
            raise HTTPException(401, "a client certificate is required")
        try:
            name = authorities.identity(der)
        except ForgedIdentity as err:
            log.warning("refused a forged client certificate: %s", err)
            raise HTTPException(403, str(err)) from None
        except LookupError as err:
            raise HTTPException(403, str(err)) from None
        return Principal(name=name, admin=name in admin_set)

    return principal


def create_standalone_app(
    store: TransferStore,
    authorities: ClientAuthorities,
    admins: Iterable[str] = (),
    consumer_templates: Callable[[], ConsumerTemplates] | None = None,
    subscriptions: SubscriptionStore | None = None,
    experiment_managers: Callable[[], dict[str, str]] = dict,
    warm_pools: Callable[[], list[dict[str, Any]]] = list,
) -> FastAPI:
    """The API with certificate identities (serve it with :func:`make_server`)."""
    from airflow_provider_lclstream.config.consumers import ConsumerTemplates

    return build_app(
        store,
        certificate_principal(authorities, admins),
        title="LCLStream API",
        consumer_templates=consumer_templates or ConsumerTemplates,
        subscriptions=subscriptions,
        experiment_managers=experiment_managers,
        warm_pools=warm_pools,
    )


def known_clients_dir(certified_config: str | Path | None) -> Path:
    """``known_clients/`` of a certified config (its default location when None)."""
    from certified import Certified

    return Path(Certified(certified_config).config) / "known_clients"


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


EXAMPLES = """examples:
  lclstream-api --config srv/ --port 8443 --admin alice
  lclstream-api --config srv/ --org-ca self --org-ca org   # CAs trusted to name their users

The caller is the name their CA was added under (certified add-client NAME CA.crt).
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lclstream-api",
        description="LCLStream transfer API over certified mutual TLS.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8443)
    p.add_argument(
        "--config", help="certified config directory (default $CERTIFIED_CONFIG, venv/etc)"
    )
    p.add_argument("--admin", action="append", default=[], help="a user who sees all transfers")
    p.add_argument(
        "--org-ca",
        action="append",
        default=None,
        help="a known_clients CA trusted to name its users by subject (default: self)",
    )
    p.add_argument("--dag-id", default=None, help="the transfer DAG (default lclstream_transfer)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    from airflow_provider_lclstream.api.airflow_store import AirflowTransferStore
    from airflow_provider_lclstream.api.airflow_subscriptions import AirflowSubscriptionStore
    from airflow_provider_lclstream.hooks import settings
    from airflow_provider_lclstream.hooks.warm_pool import pool_summaries

    store = AirflowTransferStore(args.dag_id) if args.dag_id else AirflowTransferStore()
    try:
        authorities = ClientAuthorities.load(
            known_clients_dir(args.config), args.org_ca if args.org_ca is not None else ("self",)
        )
        admins = {*args.admin, *settings.admin_names()}
        app = create_standalone_app(
            store,
            authorities,
            admins,
            settings.consumer_templates,
            AirflowSubscriptionStore(),
            settings.experiment_managers,
            pool_summaries,
        )
        server = make_server(app, args.host, args.port, args.config)
    except (OSError, KeyError, ValueError) as err:
        print(f"lclstream-api: cannot set up TLS from the certified config: {err}", file=sys.stderr)
        return 2
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
