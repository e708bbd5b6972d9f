"""``lclstream subscriptions ...``: manage the subscriptions that start transfers at run starts."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from airflow_provider_lclstream.exceptions import LCLStreamError

if TYPE_CHECKING:
    from collections.abc import Callable

    import httpx

EXAMPLES = """examples:
  lclstream --server URL subscriptions list [--all-users]
  lclstream --server URL subscriptions create sub.yaml     # prints the id and any warnings
  lclstream --server URL subscriptions show sub3
  lclstream --server URL subscriptions update sub3 patch.yaml   # fields to replace
  lclstream --server URL subscriptions disable sub3        # its run starts start nothing
  lclstream --server URL subscriptions enable sub3
  lclstream --server URL subscriptions delete sub3
  lclstream --server URL subscriptions audit [sub3]        # who changed what, when
  lclstream --server URL subscriptions unmatched           # run starts nothing matched

sub.yaml:
  match: {experiment: mfxl1023, run_types: [DATA]}   # or {instrument: mfx, pattern: "mfxl10.*"}
  template:                                          # a TransferRequest without exp/run
    detector_name: jungfrau4M
    mode: calib
    consumer_template: crystfel
    consumer_params: {geometry: /sdf/geom/j4m.geom}
    streamer: {backend: slurm}
  description: indexing of every DATA run
"""

PATH = "/v1/subscriptions"


class BadDocument(LCLStreamError, ValueError):
    """The subscription file does not hold a mapping."""


def add_parser(sub: Any) -> None:
    """Add ``subscriptions`` and its verbs to the client's sub-commands."""
    p = sub.add_parser(
        "subscriptions",
        help="manage subscriptions: which run starts start a transfer, with what request",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = p.add_subparsers(dest="verb", required=True)
    verbs.add_parser("list", help="your subscriptions").add_argument(
        "--all-users", action="store_true", help="everyone's (admins)"
    )
    verbs.add_parser("create", help="create from a YAML/JSON file (- for stdin)").add_argument(
        "file"
    )
    verbs.add_parser("show", help="one subscription").add_argument("id")
    update = verbs.add_parser("update", help="replace the fields a YAML/JSON file gives")
    update.add_argument("id")
    update.add_argument("file")
    for verb in ("enable", "disable", "delete"):
        verbs.add_parser(verb, help=f"{verb} a subscription").add_argument("id")
    audit = verbs.add_parser("audit", help="the changes (of one subscription, or of all yours)")
    audit.add_argument("id", nargs="?")
    audit.add_argument("--limit", type=int, default=100)
    verbs.add_parser("unmatched", help="run starts that no subscription matched").add_argument(
        "--limit", type=int, default=50
    )


def run(
    args: argparse.Namespace,
    http: httpx.Client,
    check: Callable[[Any, str], Any],
    load: Callable[[str], Any],
) -> Any:
    """Do the verb; ``check`` raises the client's error for an HTTP error status."""
    verb = args.verb
    if verb == "list":
        params = {"all_users": "true"} if args.all_users else {}
        return check(http.get(PATH, params=params), "list subscriptions")
    if verb == "create":
        return _saved(check(http.post(PATH, json=_document(load, args.file)), "create"))
    if verb == "show":
        return check(http.get(f"{PATH}/{args.id}"), f"show {args.id}")
    if verb == "update":
        body = _document(load, args.file)
        return _saved(check(http.patch(f"{PATH}/{args.id}", json=body), f"update {args.id}"))
    if verb in ("enable", "disable"):
        body = {"enabled": verb == "enable"}
        return _saved(check(http.patch(f"{PATH}/{args.id}", json=body), f"{verb} {args.id}"))
    if verb == "delete":
        return check(http.delete(f"{PATH}/{args.id}"), f"delete {args.id}")
    if verb == "audit":
        where = f"{PATH}/{args.id}/audit" if args.id else f"{PATH}/audit"
        return check(http.get(where, params={"limit": args.limit}), "audit")
    return check(http.get(f"{PATH}/unmatched", params={"limit": args.limit}), "unmatched")


def _document(load: Callable[[str], Any], source: str) -> Any:
    document = load(source)
    if not isinstance(document, dict):
        kind = type(document).__name__
        raise BadDocument(f"{source} must hold a mapping (YAML or JSON), not a {kind}")
    return document


def _saved(reply: Any) -> Any:
    """Print overlap warnings on stderr (the reply still goes to stdout)."""
    for warning in (reply or {}).get("warnings") or []:
        print(f"lclstream: warning: {warning}", file=sys.stderr)
    return reply


def dumps(result: Any) -> str:
    return json.dumps(result, indent=2)
