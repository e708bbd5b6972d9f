"""``KafkaHook``: the ``lclstream_kafka`` connection as ``KafkaConsumer`` settings.

host = bootstrap servers (comma-separated), login/password = SASL user and password; extras
``security_protocol``, ``sasl_mechanism``, ``ssl_cafile``, ``ssl_check_hostname``,
``consumer_config`` (see :class:`~airflow_provider_lclstream.config.connections.KafkaSettings`).
Secrets live only in the connection: the Elog trigger serializes the connection id and reads
the settings on its own Kafka thread when it connects.
"""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook
from kafka.errors import KafkaError

from airflow_provider_lclstream.config.connections import KafkaSettings
from airflow_provider_lclstream.exceptions import LCLStreamError

if TYPE_CHECKING:
    from airflow.sdk import Connection


class KafkaLoginRefused(LCLStreamError, KafkaError):
    """The brokers took the TCP connection but not the SASL login (message holds no secret)."""

    retriable = False


def guard_kafka_logs(settings: KafkaSettings) -> None:
    """Keep SASL credentials out of the logs: kafka-python's DEBUG records dump the raw
    ``SaslAuthenticate`` request, password included, so its loggers are held at INFO or above
    while a SASL connection is used."""
    if not settings.security_protocol.startswith("SASL"):
        return
    logger = logging.getLogger("kafka")
    if logger.getEffectiveLevel() < logging.INFO:
        logger.setLevel(logging.INFO)
        logging.getLogger(__name__).info(
            "kafka-python loggers raised to INFO: their DEBUG records carry SASL credentials"
        )


def reachable(bootstrap_servers: str, timeout_s: float = 3.0) -> bool:
    """True when some bootstrap server accepts a TCP connection."""
    for server in bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
                return True
        except (OSError, ValueError):
            continue
    return False


def settings_from_connection(conn: Connection) -> KafkaSettings:
    """Parse a ``lclstream_kafka`` connection (every missing or bad key named at once)."""
    extra = conn.extra_dejson or {}
    unknown = sorted(set(extra) - set(KafkaSettings.extra_keys()))
    if unknown:
        raise ValueError(
            f"connection {conn.conn_id!r} (lclstream_kafka): unknown extra keys {unknown}; "
            f"known: {', '.join(KafkaSettings.extra_keys())}"
        )
    host = conn.host or ""
    if conn.port and "," not in host and ":" not in host:
        host = f"{host}:{conn.port}"
    values: dict[str, Any] = {
        "bootstrap_servers": host or None,
        "sasl_username": conn.login or None,
        "sasl_password": conn.password or None,
    }
    values.update({k: v for k, v in extra.items() if v not in (None, "")})
    return KafkaSettings.from_values(values, conn.conn_id)


def describe_auth_failure(settings: KafkaSettings, conn_id: str, err: BaseException) -> str:
    """One line for a refused login: who, where, what to check; never the password."""
    text = str(err)
    if settings.sasl_password is not None:
        text = text.replace(settings.sasl_password.get_secret_value(), "***")
    return (
        f"Kafka at {settings.bootstrap_servers} answers but did not accept the "
        f"{settings.sasl_mechanism} login of user {settings.sasl_username!r} from connection "
        f"{conn_id!r} ({type(err).__name__}: {text}); check the connection's password and "
        "security_protocol/sasl_mechanism against the broker's listener"
    )


class KafkaHook(BaseHook):
    """Reads one ``lclstream_kafka`` connection; ``consumer_config()`` for ``KafkaConsumer``."""

    conn_name_attr = "kafka_conn_id"
    default_conn_name = "lclstream_kafka_default"
    conn_type = "lclstream_kafka"
    hook_name = KafkaSettings.hook_name

    def __init__(self, kafka_conn_id: str = default_conn_name) -> None:
        super().__init__()
        self.kafka_conn_id = kafka_conn_id

    def get_settings(self) -> KafkaSettings:
        """The connection's settings; with SASL, kafka-python's DEBUG logs are turned off."""
        settings = settings_from_connection(self.get_connection(self.kafka_conn_id))
        guard_kafka_logs(settings)
        return settings

    def consumer_config(self) -> dict[str, Any]:
        """``KafkaConsumer`` keyword arguments, SASL password included: never log them."""
        return self.get_settings().kafka_config()

    def test_connection(self) -> tuple[bool, str]:
        """Log in and list the topics (the form's Test button)."""
        from kafka import KafkaConsumer
        from kafka.errors import SaslAuthenticationFailedError

        settings = self.get_settings()
        try:
            consumer = KafkaConsumer(**settings.kafka_config(), request_timeout_ms=15000)
            try:
                topics = consumer.topics()
            finally:
                consumer.close()
        except SaslAuthenticationFailedError as err:
            return False, describe_auth_failure(settings, self.kafka_conn_id, err)
        except KafkaError as err:
            if settings.security_protocol.startswith("SASL") and reachable(
                settings.bootstrap_servers
            ):
                return False, describe_auth_failure(settings, self.kafka_conn_id, err)
            return False, f"Kafka at {settings.bootstrap_servers}: {type(err).__name__}: {err}"
        return True, f"connected to {settings.bootstrap_servers}: {len(topics)} topics"
