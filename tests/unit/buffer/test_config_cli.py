"""Options: sizes, URLs, transports, addresses, and the CLI's errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from airflow_provider_lclstream.buffer.cli import build_parser, config_from_args, main
from airflow_provider_lclstream.buffer.config import BufferConfig, parse_hostport, parse_size
from airflow_provider_lclstream.exceptions import BufferConfigError


@pytest.mark.parametrize(
    ("text", "value"),
    [("4096", 4096), ("32MB", 32_000_000), ("32MiB", 32 * 2**20), ("1.5k", 1500), (7, 7)],
)
def test_parse_size(text: str | int, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "12 parsecs", "-5", "0", "MB"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(BufferConfigError, match="bad size"):
        parse_size(text)


def test_parse_hostport() -> None:
    assert parse_hostport("127.0.0.1:9100") == ("127.0.0.1", 9100)
    assert parse_hostport(":0") == ("0.0.0.0", 0)
    with pytest.raises(BufferConfigError, match="HOST:PORT"):
        parse_hostport("localhost")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"input": "127.0.0.1:5000"}, "expected scheme://address"),
        ({"input_transport": "pigeon"}, "unknown --input-transport 'pigeon'"),
        ({"output": "tls+tcp://h:1"}, "zmq does not support 'tls\\+tcp'"),
        ({"output": "tcp://127.0.0.1"}, "needs a :PORT"),
        ({"output": "tcp://127.0.0.1:5000"}, "same URL"),
        ({"capacity_bytes": 0}, "capacity_bytes"),
        ({"expect_producers": 0}, "expect-producers"),
        ({"metrics": "nowhere"}, "metrics address"),
        ({"callback": "ftp://x"}, "--callback URL"),
        ({"callback_secret": "s"}, "without --callback"),
    ],
)
def test_config_errors_name_the_option(kwargs: dict, match: str) -> None:
    base = {"input": "tcp://127.0.0.1:5000", "output": "tcp://127.0.0.1:5001"}
    with pytest.raises(BufferConfigError, match=match):
        BufferConfig(**{**base, **kwargs})


def test_cli_builds_config() -> None:
    args = build_parser().parse_args(
        ["--input", "tcp://*:5000", "--output", "ipc:///tmp/x", "--output-transport", "nng",
         "--capacity-bytes", "32MiB", "--expect-producers", "4", "--persistent"]
    )  # fmt: skip
    config = config_from_args(args)
    assert config.capacity_bytes == 32 * 2**20 and config.output_transport == "nng"
    assert config.expect_producers == 4 and config.persistent


def test_cli_bad_values_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--input", "tcp://127.0.0.1:1", "--output", "tcp://127.0.0.1:2",
              "--capacity-bytes", "lots"])  # fmt: skip
    assert exc.value.code == 2
    assert "bad --capacity-bytes 'lots'" in capsys.readouterr().err


def test_cli_unbindable_url_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--input", "tcp://192.0.2.1:5999", "--output", "tcp://127.0.0.1:0"])
    assert code == 2
    assert "cannot bind --input tcp://192.0.2.1:5999" in capsys.readouterr().err


def test_cli_help_runs_as_module() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "airflow_provider_lclstream.buffer.cli", "--help"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 0 and "--expect-producers" in out.stdout
