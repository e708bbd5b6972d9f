"""sbatch options and batch scripts: the SLURM library's part for ``slurm_cli`` and ``sfapi``.

Both backends describe a job with sbatch's long options, built once here by
:func:`sbatch_options`; ``slurm_cli`` passes them on ``sbatch``'s command line
(:func:`sbatch_args`), ``sfapi`` writes them as ``#SBATCH`` lines (:func:`batch_script`).
Connection ``job_defaults`` and then ``spec.attributes`` are merged over the computed options,
with sbatch's names (``account``, ``qos``, ``constraint``; ``_`` reads as ``-``; slurmrestd's
``standard_output`` and ``current_working_directory`` read as ``output`` and ``chdir``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from airflow_provider_lclstream.backends.slurm import (
    DEFAULT_DIRECTORY,
    OUTPUT_PATTERN,
    check_environment,
    split_shebang,
)
from airflow_provider_lclstream.config.job import shell_quote
from airflow_provider_lclstream.exceptions import JobBackendError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow_provider_lclstream.config.job import JobSpec, ResourceSpec

_ALIASES = {"standard_output": "output", "current_working_directory": "chdir"}
_SHELLS = {"sh", "bash", "zsh", "ksh", "dash"}


def resource_options(res: ResourceSpec) -> dict[str, str | None]:
    """sbatch long options (no dashes) for a job's resources; ``None`` values are flags."""
    options: dict[str, str | None] = {
        "time": str(res.duration),
        "cpus-per-task": str(res.cpu_cores_per_process),
    }
    if res.node_count:
        options["nodes"] = str(res.node_count)
    if res.process_count:
        options["ntasks"] = str(res.process_count)
    if res.processes_per_node:
        options["ntasks-per-node"] = str(res.processes_per_node)
    if res.gpu_cores_per_process:
        options["gpus-per-task"] = str(res.gpu_cores_per_process)
    if res.exclusive_node_use:
        options["exclusive"] = None
    return options


def _sbatch_names(values: Mapping[str, Any] | None) -> dict[str, Any]:
    return {_ALIASES.get(k, k).replace("_", "-"): v for k, v in (values or {}).items()}


def sbatch_options(
    spec: JobSpec,
    defaults: Mapping[str, Any] | None = None,
    *,
    default_directory: str | None = DEFAULT_DIRECTORY,
    export: str | None = None,
) -> dict[str, str | None]:
    """sbatch long options (no dashes) for a JobSpec; ``None`` values are flags.

    The working directory is the attributes' ``chdir``, the spec's ``directory``, the
    defaults' ``chdir``, else ``default_directory`` (``None``: sbatch's own). Output goes to
    ``<directory>/slurm-<name>-%j.out`` unless ``output`` is given. ``export`` defaults to
    ``ALL`` or ``NONE`` by ``spec.inherit_environment``.
    """
    base, attrs = _sbatch_names(defaults), _sbatch_names(spec.attributes)
    name = spec.name or "lclstream"
    directory = attrs.pop("chdir", None) or spec.directory or base.get("chdir") or None
    directory = directory or default_directory
    base.pop("chdir", None)
    output = attrs.pop("output", None) or base.pop("output", None)
    if not output:
        pattern = OUTPUT_PATTERN.format(name=name)
        output = f"{str(directory).rstrip('/')}/{pattern}" if directory else pattern
    options: dict[str, str | None] = {"job-name": name}
    if directory:
        options["chdir"] = str(directory)
    options["output"] = str(output)
    options.update(resource_options(spec.resources))
    if export is None:
        export = "ALL" if spec.inherit_environment else "NONE"
    options["export"] = export
    for key, value in {**base, **attrs}.items():
        options[key] = None if value in (None, True, "") else str(value)
    return options


def sbatch_args(spec: JobSpec, defaults: Mapping[str, Any] | None = None) -> list[str]:
    """``sbatch --parsable`` arguments; the environment goes through ``--export=NAMES``.

    The spec's environment is passed in ``sbatch``'s own environment, so ``--export`` names it
    (``ALL`` when the job inherits the submitter's environment).
    """
    names = check_environment(spec)
    export = "ALL" if spec.inherit_environment else (",".join(names) or "NONE")
    options = sbatch_options(spec, defaults, export=export)
    args = ["--parsable"]
    for key, value in options.items():
        args.append(f"--{key}" if value is None else f"--{key}={value}")
    return args


def _directive(key: str, value: str | None) -> str:
    if value is None:
        return f"#SBATCH --{key}"
    if "\n" in value or "\r" in value or '"' in value:
        raise JobBackendError(f"sbatch option --{key}={value!r}: newlines and '\"' not allowed")
    return f'#SBATCH --{key}="{value}"' if re.search(r"\s", value) else f"#SBATCH --{key}={value}"


def _is_shell(shebang: str) -> bool:
    words = [w.rsplit("/", 1)[-1] for w in shebang[2:].split()[:2]]
    return bool(words) and (
        words[0] in _SHELLS or (words[0] == "env" and len(words) > 1 and words[1] in _SHELLS)
    )


def batch_script(
    spec: JobSpec,
    defaults: Mapping[str, Any] | None = None,
    *,
    default_directory: str | None = None,
) -> tuple[str, str]:
    """The script to submit (shebang, ``#SBATCH`` lines, exports, body) and its output pattern.

    ``spec.environment`` becomes ``export`` lines, so it needs a shell script (no shebang, or
    sh/bash/zsh/ksh/dash). Without a directory the job runs where the submitter says (the SF
    API's submit directory) and the output pattern is relative to it.
    """
    options = sbatch_options(spec, defaults, default_directory=default_directory)
    shebang, body = split_shebang(spec.script)
    check_environment(spec)
    if spec.environment and not _is_shell(shebang):
        raise JobBackendError(
            f"job {spec.name!r}: environment needs a shell script, not {shebang!r}; "
            "export the variables in a bash wrapper"
        )
    lines = [shebang, *(_directive(k, v) for k, v in options.items())]
    lines += [f"export {k}={shell_quote(v)}" for k, v in spec.environment.items()]
    lines.append(body)
    return "\n".join(lines) + ("" if body.endswith("\n") else "\n"), str(options["output"])
