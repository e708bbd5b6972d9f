"""Consumer templates and the shell: nothing a requester types is ever run by a shell.

The injection tests render every job script of a transfer (buffer, streamer, consumers) from a
request carrying ``; rm -rf``, ``$(...)`` or backticks in one of its fields and run the scripts
with the real ``bash``. The programs they start (``lclstream-buffer``, ``lclstreamer``,
``mpiexec``, ``lclstream-receive``) are fakes that only record their arguments.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_lclstream.config.consumers import ConsumerTemplateError, ConsumerTemplates
from airflow_provider_lclstream.config.transfer import TransferRequest
from airflow_provider_lclstream.transfer.jobs import (
    BufferEndpoints,
    buffer_job,
    consumer_job,
    streamer_job,
)
from airflow_provider_lclstream.transfer.request import InvalidTransferRequest, request_from

TEMPLATES = {
    "receive": {
        "description": "lclstream-receive into a directory",
        "command": ["lclstream-receive", "--url", "$LCLSTREAM_URL", "--out", "{out}",
                    "--timeout", "{timeout}"],
        "params": {
            "out": {"type": "path", "required": True},
            "timeout": {"type": "integer", "minimum": 1, "maximum": 3600, "default": 60},
        },
    },
    "echo": {  # a permissive template: any text, still never parsed by the shell
        "command": ["lclstream-receive", "--label", "{label}"],
        "params": {"label": {"type": "string", "pattern": "(?s).*"}},
    },
}  # fmt: skip
FAKE_TOOL = """#!/bin/bash
# fake program: records its arguments, one per line
printf '%s\\n' "$(basename "$0")" "$@" >> "$ARGS_LOG"
"""


def templates() -> ConsumerTemplates:
    return ConsumerTemplates.parse(json.dumps(TEMPLATES), "test")


def test_template_renders_typed_parameters() -> None:
    line = templates().command_line("receive", {"out": "/data/out", "timeout": 5})
    assert line == "lclstream-receive --url ''\"$LCLSTREAM_URL\"'' --out /data/out --timeout 5"
    assert templates().command_line("receive", {"out": "o"}).endswith("--timeout 60")


@pytest.mark.parametrize(
    ("name", "values", "message"),
    [
        ("nope", {}, "no consumer template 'nope' (known: echo, receive)"),
        ("receive", {}, "missing required parameters ['out']"),
        ("receive", {"out": "o", "timeout": "5"}, "timeout: expected a integer"),
        ("receive", {"out": "o", "timeout": 0}, "below the minimum"),
        ("receive", {"out": "../etc"}, "not a plain path"),
        ("receive", {"out": "o", "x": 1}, "unknown parameters ['x']"),
    ],
)
def test_template_errors_name_the_problem(name: str, values: dict, message: str) -> None:
    with pytest.raises(ConsumerTemplateError, match=message.replace("[", r"\[").replace("(", r"\(")
                       .replace(")", r"\)")):  # fmt: skip
        templates().command_line(name, values)


def test_bad_template_definitions_are_reported() -> None:
    with pytest.raises(ConsumerTemplateError, match="not valid JSON"):
        ConsumerTemplates.parse("{", "[lclstream] consumer_templates")
    with pytest.raises(ConsumerTemplateError, match="undeclared parameters"):
        ConsumerTemplates.parse('{"t": {"command": ["x", "{y}"]}}', "v")


def test_raw_command_needs_an_admin() -> None:
    raw = {"request": {"synthetic": True, "consumer_command": "echo hi"}}
    with pytest.raises(InvalidTransferRequest, match="for admins only and mallory"):
        request_from(raw, {}, caller="mallory")
    assert request_from(raw, {}, admin=True)["consumer_command"] == "echo hi"
    form = {"consumer_command": "echo hi", "source": "synthetic"}
    with pytest.raises(InvalidTransferRequest, match="for admins only"):
        request_from(None, form)


def test_template_becomes_the_consumer_command() -> None:
    conf = {"request": {"synthetic": True, "consumer_template": "receive",
                        "consumer_params": {"out": "/o"}}}  # fmt: skip
    rendered = request_from(conf, {}, templates=templates())
    assert rendered["consumer_command"].startswith("lclstream-receive --url")
    with pytest.raises(InvalidTransferRequest, match="known: none are defined"):
        request_from(conf, {})


# fields that take any text (so the scripts below really run with the payload in them)
ACCEPTED = {("consumer_params", "label"), ("config", "source_identifier")}
PAYLOADS = ["x; rm -rf {victim}", "$(touch {mark})", "`touch {mark}`", "x\ntouch {mark}"]
# every string a request can carry, as (path in the request, base request)
FIELDS: list[tuple[tuple[str | int, ...], dict[str, Any]]] = [
    (("exp",), {"run": 1}),
    (("files", 0), {"files": ["a.xtc2"]}),
    (("xtc_dir",), {"exp": "xpptut15", "run": 1}),
    (("detector_name",), {"synthetic": True}),
    (("output_dir",), {"synthetic": True}),
    (("buffer_host",), {"synthetic": True}),
    (("consumer_template",), {"synthetic": True}),
    (("consumer_params", "out"), {"synthetic": True, "consumer_template": "receive"}),
    (("consumer_params", "label"), {"synthetic": True, "consumer_template": "echo"}),
    (("streamer", "conn_id"), {"synthetic": True, "streamer": {}}),
    (("buffer", "attributes", "account"), {"synthetic": True, "buffer": {"attributes": {}}}),
    (("consumer", "attributes", "x; rm"), {"synthetic": True, "consumer": {"attributes": {}}}),
    (("config", "source_identifier"), {}),
]


def _set(doc: dict[str, Any], path: tuple[str | int, ...], value: str) -> dict[str, Any]:
    doc = json.loads(json.dumps(doc))
    if path[0] == "config":
        doc["config"] = {
            "source_identifier": value,
            "event_source": {"type": "InternalEventSource", "number_of_events_to_generate": 1},
            "data_sources": {"detector_data": {"type": "SyntheticDetector", "shape": [2, 2]}},
            "processing_pipeline": {"type": "BatchProcessingPipeline", "batch_size": 1},
            "data_serializer": {"type": "HDF5BinarySerializer",
                                "fields": {"detector_data": "/data/data"}},
            "data_handlers": [{"type": "BinaryDataStreamingDataHandler", "urls": ["tcp://h:1"]}],
        }  # fmt: skip
        return doc
    node: Any = doc
    for key in path[:-1]:
        node = node.setdefault(key, {}) if isinstance(key, str) else node[key]
    if path[-1] == "x; rm":  # the payload as an attribute's *name*
        node[value] = "v"
    else:
        node[path[-1]] = value
    return doc


@pytest.mark.parametrize("payload", PAYLOADS, ids=["semicolon", "dollar-paren", "backtick", "nl"])
@pytest.mark.parametrize("field", FIELDS, ids=[".".join(map(str, f[0])) for f in FIELDS])
def test_no_request_field_reaches_a_shell(
    field: tuple[tuple[str | int, ...], dict[str, Any]], payload: str, tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    mark = tmp_path / "pwned"
    value = payload.format(victim=victim, mark=mark)
    path, base = field
    try:
        rendered = request_from({"request": _set(base, path, value)}, {}, templates=templates())
    except InvalidTransferRequest:
        assert path not in ACCEPTED, "this field takes any text: it must reach the scripts"
        return  # refused before any script exists
    # accepted: run every script of the transfer with the real bash
    request = TransferRequest.model_validate(rendered)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("lclstream-buffer", "lclstreamer", "mpiexec", "lclstream-receive"):
        (bin_dir / name).write_text(FAKE_TOOL)
        (bin_dir / name).chmod(0o755)
    endpoints = BufferEndpoints("127.0.0.1", *(request.buffer_ports or (1, 2, 3)))
    scripts = [
        buffer_job(request, endpoints, bin_dir=str(bin_dir)).script,
        streamer_job(
            request, request.to_streamer_config(endpoints.input_url), bin_dir=str(bin_dir)
        ).script,
        consumer_job(request, endpoints.output_url, 0, bin_dir=str(bin_dir)).script,
    ]
    log = tmp_path / "args.log"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "ARGS_LOG": str(log),
           "LCLSTREAM_URL": endpoints.output_url}  # fmt: skip
    for script in scripts:
        done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=30)  # fmt: skip
        assert done.returncode == 0, done.stderr
    assert victim.is_dir() and not mark.exists()
    if path == ("consumer_params", "label"):  # the permissive template got it, verbatim
        assert value in log.read_text()


def test_api_refuses_raw_commands_from_users() -> None:
    from fastapi import Header
    from fastapi.testclient import TestClient

    from airflow_provider_lclstream.api.app import Principal, build_app
    from tests.unit.api.fakes import MemoryTransferStore

    def principal(x_user: str = Header(...), x_admin: str = Header("")) -> Principal:
        return Principal(x_user, admin=x_admin == "1")

    client = TestClient(build_app(MemoryTransferStore(), principal, consumer_templates=templates))
    raw = {"synthetic": True, "consumer_command": "rm -rf /"}
    r = client.post("/v1/transfers", json=raw, headers={"X-User": "mallory"})
    assert r.status_code == 403 and "admins only" in r.text
    ok = client.post("/v1/transfers", json=raw, headers={"X-User": "root", "X-Admin": "1"})
    assert ok.status_code == 201
    bad = {"synthetic": True, "consumer_template": "receive", "consumer_params": {"out": "$(id)"}}
    r = client.post("/v1/transfers", json=bad, headers={"X-User": "alice"})
    assert r.status_code == 422 and "not a plain path" in r.text
    good = {**bad, "consumer_params": {"out": "/data/o"}}
    assert client.post("/v1/transfers", json=good, headers={"X-User": "alice"}).status_code == 201
