"""``lclstream``: request a transfer from an LCLStream API server and pull its data.

``lclstream get CONFIG --server https://host:8443`` POSTs the config (YAML or JSON, a streamer
config or a TransferRequest), waits until the transfer is ready, then receives its messages
from the returned URL into ``--out DIR`` (one file each) or stdout. Ctrl-C cancels the transfer
(DELETE) before exiting. TLS identity and server trust come from the certified config.

Errors are one line of advice on stderr, never a traceback; the exit status says which kind
(:data:`EXIT_CODES`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from airflow_provider_lclstream.api import client_subscriptions
from airflow_provider_lclstream.exceptions import LCLStreamError

if TYPE_CHECKING:
    from collections.abc import Callable

    import httpx

TERMINAL = {"completed", "failed", "canceled"}
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_TLS, EXIT_CONFIG = 0, 1, 2, 3, 4, 5
#: exit status -> meaning (printed by ``lclstream --help``, listed in docs/api.md)
EXIT_CODES = {
    EXIT_OK: "done (get: every message received)",
    EXIT_FAILED: "the server refused the request, or the transfer failed or lost messages",
    EXIT_USAGE: "bad command line, or the config file cannot be read",
    EXIT_UNREACHABLE: "the server cannot be reached (name, port, network, timeout)",
    EXIT_TLS: "TLS failed: the server does not trust your certificate, or you not its",
    EXIT_CONFIG: "the certified config directory is missing or incomplete",
    130: "interrupted (Ctrl-C); the transfer was canceled",
}


class ClientError(LCLStreamError, RuntimeError):
    """The server refused a request or the transfer ended before data could be pulled."""


class AdvisedError(LCLStreamError):
    """An error with one line of advice and the exit status to leave with."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def certified_client(certified_config: str | None) -> Callable[[str], Any]:
    """A factory of httpx clients carrying our certified identity (mutual TLS)."""
    from certified import Certified

    where = certified_config or os.environ.get("CERTIFIED_CONFIG") or "the default location"
    try:
        cert = Certified(certified_config)
        cert.identity()  # fails here, not mid-request, when id/ is missing or unreadable
    except (OSError, ValueError, KeyError) as err:
        raise AdvisedError(
            f"cannot use the certified config in {where} ({type(err).__name__}: {err}); "
            "give --certified-config DIR (made with `certified init`)",
            EXIT_CONFIG,
        ) from None
    return lambda base_url: cert.Client(base_url)


def advice(err: BaseException, server: str) -> AdvisedError | None:
    """One line of advice for a network, TLS or certified error (None: not one of those)."""
    import ssl

    import httpx

    text = str(err) or type(err).__name__
    chain = [err, err.__cause__, err.__context__]
    if any(isinstance(e, ssl.SSLError) for e in chain) or "CERTIFICATE" in text.upper():
        return AdvisedError(
            f"TLS with {server} failed ({text}); check that the server's CA is in your "
            "known_servers and that the server added your CA (certified add-client)",
            EXIT_TLS,
        )
    if isinstance(err, httpx.TimeoutException):
        return AdvisedError(
            f"{server} did not answer in time ({text}); retry later", EXIT_UNREACHABLE
        )
    if isinstance(err, httpx.TransportError | ConnectionError):
        if isinstance(err, httpx.ReadError | httpx.RemoteProtocolError):
            return AdvisedError(
                f"{server} closed the connection ({text}); usually the server refused "
                "your client certificate: ask its admin to add your CA (certified add-client)",
                EXIT_TLS,
            )
        return AdvisedError(
            f"cannot reach {server} ({text}); check --server (https://HOST:PORT) and that "
            "lclstream-api runs there",
            EXIT_UNREACHABLE,
        )
    return None


def _check(response: httpx.Response, what: str) -> Any:
    if response.status_code >= 400:
        try:
            detail = response.json()
        except ValueError:
            detail = response.text[:500]
        raise ClientError(f"{what}: HTTP {response.status_code}: {json.dumps(detail)}")
    return response.json()


def load_document(source: str) -> Any:
    """Read a config file (``-`` for stdin); YAML is a superset of JSON."""
    text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    return yaml.safe_load(text)


def wait_ready(
    http: httpx.Client, transfer_id: str, timeout_s: float, poll_s: float
) -> dict[str, Any]:
    """Poll until the transfer has a data URL; raise if it ends or times out first."""
    deadline = time.monotonic() + timeout_s
    while True:
        detail = _check(http.get(f"/v1/transfers/{transfer_id}"), "status")
        if detail.get("url") and detail["state"] == "ready":
            return dict(detail)
        if detail["state"] in TERMINAL:
            raise ClientError(f"transfer {transfer_id} ended {detail['state']} before data flowed")
        if time.monotonic() > deadline:
            raise ClientError(f"transfer {transfer_id} not ready after {timeout_s:.0f} s")
        time.sleep(poll_s)


def pull(url: str, transport: str, out: Path | None, timeout_s: float) -> dict[str, Any]:
    """Receive every message until the buffer's end of stream; files in ``out`` or stdout."""
    from airflow_provider_lclstream.consumer.receiver import ReceiveReport, receive_messages
    from airflow_provider_lclstream.protocol import is_hdf5

    report = ReceiveReport(1)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    sink = sys.stdout.buffer
    for message in receive_messages(
        url, transport, bind=False, expect_producers=1, timeout_s=timeout_s, report=report
    ):
        if out is None:
            sink.write(message.raw)
            continue
        suffix = "h5" if is_hdf5(message.raw) else "bin"
        final = out / f"msg_{message.index:06d}.{suffix}"
        tmp = final.with_name(f".{final.name}.tmp")
        tmp.write_bytes(message.raw)
        os.replace(tmp, final)
    if out is None:
        sink.flush()
    return report.summary()


def get(args: argparse.Namespace, make_client: Callable[[str], Any]) -> int:
    body = load_document(args.config)
    with make_client(args.server) as http:
        status = _check(http.post("/v1/transfers", json=body), "create")
        transfer_id = status["id"]
        print(f"transfer {transfer_id} {status['state']}", file=sys.stderr)
        try:
            detail = wait_ready(http, transfer_id, args.ready_timeout, args.poll)
            print(f"pulling from {detail['url']}", file=sys.stderr)
            summary = pull(detail["url"], detail.get("transport") or "zmq", args.out, args.timeout)
        except KeyboardInterrupt:
            print(f"interrupted: canceling transfer {transfer_id}", file=sys.stderr)
            http.delete(f"/v1/transfers/{transfer_id}")
            return 130
        except ClientError:
            http.delete(f"/v1/transfers/{transfer_id}")
            raise
    print(json.dumps({"id": transfer_id, **summary}), file=sys.stderr)
    return 0 if summary.get("ok", True) else 1


EXAMPLES = """examples:
  lclstream --server https://api.example.org:8443 --certified-config ~/alice list
  lclstream --server https://api.example.org:8443 get request.yaml --out data/
  lclstream --server https://api.example.org:8443 cancel lcls_20250101T000000_ab12cd34
  lclstream --server https://api.example.org:8443 subscriptions --help

exit status:
""" + "\n".join(f"  {code:<4}{meaning}" for code, meaning in EXIT_CODES.items())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lclstream",
        description="LCLStream API client.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--server", required=True, help="API base URL, e.g. https://host:8443")
    p.add_argument("--certified-config", help="certified config dir (default $CERTIFIED_CONFIG)")
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("get", help="start a transfer and pull its data")
    g.add_argument("config", help="streamer config or TransferRequest (YAML/JSON, - for stdin)")
    g.add_argument("--out", type=Path, help="write each message as a file here (else stdout)")
    g.add_argument("--timeout", type=float, default=60.0, help="longest wait for a message, s")
    g.add_argument("--ready-timeout", type=float, default=600.0, help="wait for ready, s")
    g.add_argument("--poll", type=float, default=1.0, help="status poll interval, s")
    sub.add_parser("list", help="list your transfers")
    for name in ("status", "cancel"):
        sub.add_parser(name, help=f"{name} a transfer").add_argument("id")
    client_subscriptions.add_parser(sub)
    return p


def main(argv: list[str] | None = None, make_client: Callable[[str], Any] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args, make_client)
    except AdvisedError as err:
        print(f"lclstream: {err}", file=sys.stderr)
        return err.status


def _run(args: argparse.Namespace, make_client: Callable[[str], Any] | None) -> int:
    """The command; every failure becomes an :class:`AdvisedError` or a status."""
    try:
        factory = make_client or certified_client(args.certified_config)
        if args.command == "get":
            return get(args, factory)
        with factory(args.server) as http:
            if args.command == "subscriptions":
                result = client_subscriptions.run(args, http, _check, load_document)
            elif args.command == "list":
                result = _check(http.get("/v1/transfers"), "list")
            elif args.command == "status":
                result = _check(http.get(f"/v1/transfers/{args.id}"), "status")
            else:
                result = _check(http.delete(f"/v1/transfers/{args.id}"), "cancel")
        print(json.dumps(result, indent=2))
        return 0
    except AdvisedError:
        raise
    except client_subscriptions.BadDocument as err:
        raise AdvisedError(str(err), EXIT_USAGE) from None
    except ClientError as err:
        raise AdvisedError(str(err), EXIT_FAILED) from None
    except (yaml.YAMLError, FileNotFoundError, IsADirectoryError, UnicodeDecodeError) as err:
        raise AdvisedError(
            f"cannot read {getattr(args, 'config', None) or getattr(args, 'file', '?')!r}: {err}",
            EXIT_USAGE,
        ) from None
    except Exception as err:  # noqa: BLE001 - turned into advice or reported in one line
        advised = advice(err, args.server)
        if advised is None:
            raise AdvisedError(
                f"unexpected {type(err).__name__}: {err} (please report this)", EXIT_FAILED
            ) from None
        raise advised from None


if __name__ == "__main__":
    sys.exit(main())
