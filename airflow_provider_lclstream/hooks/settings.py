"""The ``[lclstream]`` section of Airflow's configuration: its options and the one reader.

Set an option in ``airflow.cfg`` (``[lclstream]`` / ``jobs_dir = /data/jobs``) or as
``AIRFLOW__LCLSTREAM__JOBS_DIR``; ``get_provider_info`` declares the section from
:data:`OPTIONS`, so ``airflow config list`` shows it with its defaults and descriptions.

The older ``LCLSTREAM_*`` environment variables still work while the option is not set the Airflow
way; each use warns (``FutureWarning``) with the option to set instead.

These are the settings of Airflow's own processes. What a streamer, buffer or consumer job needs
(``LCLSTREAM_PSANA_OFFLINE``, ``LCLSTREAM_URL``, ...) travels in the job's environment instead:
see :data:`JOB_ENVIRONMENT`. Pure layers (``transfer/``, ``backends/``) never read this module:
their callers pass the values in.

Airflow is imported inside the readers only: Airflow's ProvidersManager imports this module
(through ``get_provider_info``) while it loads its configuration.
"""

from __future__ import annotations

import configparser
import os
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from airflow_provider_lclstream.backends.local import DEFAULT_ROOT
from airflow_provider_lclstream.config.backends import backend_names

if TYPE_CHECKING:
    from airflow_provider_lclstream.config.consumers import ConsumerTemplates

SECTION = "lclstream"
VERSION_ADDED = "0.1.0"


@dataclass(frozen=True)
class Option:
    """One option of ``[lclstream]``; ``old_env`` is the deprecated variable it replaces."""

    key: str
    type: Literal["string", "float", "boolean"]
    default: str
    description: str
    example: str | None = None
    old_env: str | None = None
    version_added: str = VERSION_ADDED

    @property
    def env(self) -> str:
        """The Airflow environment variable of this option."""
        return f"AIRFLOW__{SECTION.upper()}__{self.key.upper()}"


OPTIONS: dict[str, Option] = {
    o.key: o
    for o in (
        Option(
            "jobs_dir",
            "string",
            DEFAULT_ROOT,
            "Root of the local backend's job directories (one per job). Workers and the "
            "triggerer must see the same directory: the local backend only works on one host. A "
            "``lclstream_local`` connection's ``root`` wins.",
            example="/data/lclstream/jobs",
            old_env="LCLSTREAM_JOBS_DIR",
        ),
        Option(
            "trigger_settle_seconds",
            "float",
            "10",
            "Seconds a trigger holds back its first event after the task deferred, while Airflow "
            "has the race of apache/airflow#71580 and #72716 (a task whose trigger fires within "
            "seconds is marked failed); not applied on an Airflow with both fixes "
            "(``triggers/settle.py`` ``FIXED_IN``). Default of the operators' and sensors' "
            "``settle_s``; ``0`` turns it off (``dag.test()`` runs triggers inline and needs no "
            "settling).",
            example="0",
            old_env="LCLSTREAM_TRIGGER_SETTLE_S",
        ),
        Option(
            "api_admins",
            "string",
            "",
            "Comma-separated user names of LCLStream admins: they see and cancel every transfer "
            "in the transfer API plugin (others see their own), and only they may give a raw "
            "``consumer_command`` (a shell line) in a request, the API's or a DAG run's. Read "
            "by the api-server and the workers.",
            example="alice,bob",
            old_env="LCLSTREAM_API_ADMINS",
        ),
        Option(
            "consumer_templates",
            "string",
            "",
            "Consumer templates (JSON): named commands with typed parameters that requests "
            "choose with ``consumer_template`` and fill with ``consumer_params``; see "
            "``config/consumers.py`` and the security page. Empty: the Airflow Variable "
            "``lclstream_consumer_templates`` is read instead. Read by the workers and the "
            "api-server.",
            example='{"print": {"command": ["lclstream-receive", "--url", "$LCLSTREAM_URL", '
            '"--dial", "--out", "{out}"], "params": {"out": {"type": "path", '
            '"required": true}}}}',
        ),
        Option(
            "experiment_managers",
            "string",
            "",
            "Who may manage subscriptions of which experiments (JSON: user name -> regular "
            "expression that must match the whole experiment name). Admins (``api_admins``, and "
            "inside Airflow users who may edit Airflow Variables) manage every subscription; "
            "instrument-wide subscriptions are for admins only. Read by the api-server and "
            "``lclstream-api`` at each request.",
            example='{"alice": "mfxl10[0-9]+", "bob": "xpptut15|xppx0001"}',
        ),
        Option(
            "backend",
            "string",
            "local",
            "Default job backend of the example DAGs' forms (streamer, buffer and consumer): "
            f"{', '.join(backend_names())}. Read by the dag-processor.",
            example="slurm",
            old_env="LCLSTREAM_BACKEND",
        ),
        Option(
            "detector",
            "string",
            "",
            "Default ``detector_name`` of the example DAGs' forms; empty: ``epix10k2M`` in "
            "``lclstream_transfer``, ``xppcspad`` in ``lclstream_on_run_start``. Read by the "
            "dag-processor.",
            example="jungfrau4M",
            old_env="LCLSTREAM_DETECTOR",
        ),
        Option(
            "output_dir",
            "string",
            "/tmp/lclstream-output",
            "Default ``output_dir`` (where the default consumer writes HDF5) of the example "
            "DAGs' forms. Read by the dag-processor.",
            example="/sdf/data/lcls/ds/xpp/xpptut15/scratch/lclstream",
            old_env="LCLSTREAM_OUTPUT_DIR",
        ),
        Option(
            "kafka_bootstrap",
            "string",
            "127.0.0.1:9092",
            "Kafka bootstrap servers (``host:port``, comma-separated) of the Elog run-start "
            "watcher of ``lclstream_on_run_start``. Read by the dag-processor.",
            example="kafka:9092",
            old_env="LCLSTREAM_KAFKA_BOOTSTRAP",
        ),
        Option(
            "kafka_conn_id",
            "string",
            "",
            "A ``lclstream_kafka`` connection (bootstrap servers, SASL/TLS settings and secrets) "
            "for the Elog run-start watcher of ``lclstream_on_run_start``; when set it replaces "
            "``kafka_bootstrap``. Read by the dag-processor (the id) and the triggerer (the "
            "connection).",
            example="lclstream_kafka",
        ),
        Option(
            "experiments",
            "string",
            "",
            "Quick start of ``lclstream_on_run_start`` while no subscription exists: regular "
            "expression that must match the whole experiment name for a run start to start a "
            "transfer (others are counted as unmatched); empty: every experiment. Read by the "
            "workers at each run start.",
            example="mfxl10.*",
            old_env="LCLSTREAM_EXPERIMENTS",
        ),
        Option(
            "xtc_dir",
            "string",
            "",
            "psana2's ``dir=`` for runs started by the Elog watcher or ``lclstream-arp-launch``; "
            "empty: psana finds the run itself. Read by the workers.",
            example="/sdf/data/lcls/ds/xpp/xpptut15/xtc",
            old_env="LCLSTREAM_XTC_DIR",
        ),
        Option(
            "prestart",
            "boolean",
            "True",
            "Whether ``lclstream_on_run_start`` claims a run start's warm buffer, streamer and "
            "consumers itself before it triggers ``lclstream_transfer``, whose tasks then adopt "
            "them (``operators/prestart.py``): the run streams while its DAG run is created. "
            "Applies only where warm pools serve the transfer. Read by the workers.",
            example="False",
        ),
        Option(
            "logbook_url",
            "string",
            "https://pswww.slac.stanford.edu/ws/lgbk",
            "Base URL of the LCLS logbook web service that psana2 asks for a run's files "
            "(``{base}/lgbk/<exp>/ws/<run>/current_files_for_live_mode``); passed to streamer "
            "jobs as ``LCLSTREAM_LOGBOOK_URL``. Unreachable, a non-live run scans ``xtc_dir``; "
            "live mode needs it. Read by the workers.",
            example="http://127.0.0.1:8080/ws/lgbk",
        ),
    )
}

#: Environment variables of the jobs (not Airflow settings): name -> meaning.
JOB_ENVIRONMENT: dict[str, str] = {
    "LCLSTREAM_PSANA_OFFLINE": "`1`: psana2 skips the calibration constants (no calibration web "
    "services); passed from the worker's environment into the streamer job",
    "LCLSTREAM_LOGBOOK_URL": "set in streamer jobs from `[lclstream] logbook_url`: the logbook "
    "psana2 asks for a run's files (streamer/sources/psana_logbook.py)",
    "LCLSTREAM_URL": "set in consumer jobs: the buffer output URL to dial",
    "LCLSTREAM_TRANSPORT": "set in consumer jobs: the transport library (`zmq` or `nng`)",
    "LCLSTREAM_JOBID": "read by `lclstream-buffer`: the job id in its callbacks",
    "LCLSTREAM_JOB_ID": "set by the local backend in each job: its job id",
    "LCLSTREAM_JOB_DIR": "set by the local backend in each job: its job directory",
}


def config_section() -> dict[str, Any]:
    """The ``config`` entry of the provider info (Airflow's provider-info schema)."""
    return {
        SECTION: {
            "description": "Settings of the LCLStream provider's Airflow processes (workers, "
            "triggerer, dag-processor, api-server). The jobs' own settings travel in their "
            "environment.",
            "options": {
                o.key: {
                    "description": o.description,
                    "version_added": o.version_added,
                    "type": o.type,
                    "example": o.example,
                    "default": o.default,
                }
                for o in OPTIONS.values()
            },
        }
    }


def _set_the_airflow_way(option: Option) -> bool:
    """True when airflow.cfg or an ``AIRFLOW__LCLSTREAM__*`` variable sets the option."""
    from airflow.configuration import conf

    if any(
        name in os.environ for name in (option.env, f"{option.env}_CMD", option.env + "_SECRET")
    ):
        return True
    # The parser's own sections hold airflow.cfg (and conf.set); defaults live elsewhere.
    return configparser.ConfigParser.has_option(conf, SECTION, option.key)


def get(key: str) -> str:
    """The option's value: Airflow's configuration, else the old variable (warns), else default."""
    from airflow.configuration import conf

    option = OPTIONS[key]
    if option.old_env and option.old_env in os.environ and not _set_the_airflow_way(option):
        warnings.warn(
            f"{option.old_env} is deprecated: set [{SECTION}] {key} in airflow.cfg or "
            f"{option.env} instead",
            FutureWarning,
            stacklevel=2,
        )
        return os.environ[option.old_env]
    return str(conf.get(SECTION, key, fallback=option.default))


def get_float(key: str) -> float:
    """A ``float`` option; a value that is not a number fails naming the option."""
    raw = get(key)
    try:
        return float(raw)
    except ValueError:
        raise ValueError(
            f"[{SECTION}] {key} must be a number of seconds, got {raw!r} (set {OPTIONS[key].env})"
        ) from None


def get_bool(key: str) -> bool:
    """A ``boolean`` option (``true``/``false``, ``1``/``0``, ``yes``/``no``, ``on``/``off``);
    anything else fails naming the option."""
    raw = get(key).strip().lower()
    if raw in ("true", "1", "yes", "on"):
        return True
    if raw in ("false", "0", "no", "off"):
        return False
    raise ValueError(
        f"[{SECTION}] {key} must be true or false, got {raw!r} (set {OPTIONS[key].env})"
    )


def get_optional(key: str) -> str | None:
    """A string option; empty means unset (None)."""
    return get(key).strip() or None


#: Airflow Variable holding the consumer templates when ``[lclstream] consumer_templates`` is empty
CONSUMER_TEMPLATES_VARIABLE = "lclstream_consumer_templates"


def admin_names() -> frozenset[str]:
    """``[lclstream] api_admins``: the users that see every transfer and may run raw commands."""
    return frozenset(n.strip() for n in get("api_admins").split(",") if n.strip())


def experiment_managers() -> dict[str, str]:
    """``[lclstream] experiment_managers``: user -> regex of the experiments they manage."""
    import json
    import re

    text = get_optional("experiment_managers")
    if text is None:
        return {}
    where = f"[{SECTION}] experiment_managers"
    try:
        data = json.loads(text)
    except ValueError as err:
        raise ValueError(f"{where} is not valid JSON: {err}") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ValueError(f"{where} must be a JSON object of user name -> regular expression")
    for user, pattern in data.items():
        try:
            re.compile(pattern)
        except re.error as err:
            raise ValueError(f"{where}: the pattern of {user!r} is not a regex: {err}") from None
    return {str(k): str(v) for k, v in data.items()}


def consumer_templates() -> ConsumerTemplates:
    """The admin's consumer templates: ``[lclstream] consumer_templates``, else the Variable."""
    from airflow_provider_lclstream.config.consumers import ConsumerTemplates

    text = get_optional("consumer_templates")
    if text is not None:
        return ConsumerTemplates.parse(text, f"[{SECTION}] consumer_templates")
    return ConsumerTemplates.parse(
        _variable(CONSUMER_TEMPLATES_VARIABLE), f"Variable {CONSUMER_TEMPLATES_VARIABLE}"
    )


def _variable(key: str) -> str | None:
    """An Airflow Variable: through the task SDK inside a task, the metadata DB elsewhere."""
    import sys

    runner = sys.modules.get("airflow.sdk.execution_time.task_runner")
    if hasattr(runner, "SUPERVISOR_COMMS"):
        from airflow.sdk import Variable

        value = Variable.get(key, default=None)
    else:
        from airflow.models import Variable as ModelVariable

        value = ModelVariable.get(key, default_var=None)
    return None if value is None else str(value)
