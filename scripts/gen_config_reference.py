"""Render docs/reference/configuration.md from the package's pydantic models.

    .venv/bin/python scripts/gen_config_reference.py           # (re)write the page
    .venv/bin/python scripts/gen_config_reference.py --check   # exit 1 if the page is stale

Only reads the package: the LCLStreamer component models and their registry
(``config/streamer_components.py``, ``config/streamer.py``, ``config/detectors.py``),
``TransferRequest``, ``JobSpec``, the ``[lclstream]`` section of the provider info
(``hooks/settings.py``) and the connection settings models (``config/connections.py``), which
also give one page per connection type under ``docs/connections/``.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import BaseModel, SecretStr
from pydantic_core import PydanticUndefined

if typing.TYPE_CHECKING:
    from collections.abc import Mapping

    from pydantic.fields import FieldInfo

REPO = Path(__file__).resolve().parents[1]
OUTPUT = REPO / "docs" / "reference" / "configuration.md"
CONNECTIONS_DIR = REPO / "docs" / "connections"

HEADER = """\
# Configuration reference

!!! note "Generated file"
    Written by `scripts/gen_config_reference.py` from the pydantic models; do not edit by hand.
    Regenerate with `.venv/bin/python scripts/gen_config_reference.py`.

Every model below rejects unknown keys unless it says otherwise. Defaults are shown as JSON
(`null`, `true`, `"text"`); *required* means the key has no default.

Value types used in the tables:

- **shape**: an array shape; upstream writes it as a string (`"4,4,4"`, `"32,"`), a single
  integer or a list also works; every dimension must be at least 1.
- **dtype**: a numpy dtype name, checked with `numpy.dtype` (`uint16`, `float32`).
- **list[str] (or one str)**: a list of strings; a single string is read as a one-item list.
"""

# Validators of the shared value types in config/streamer_components.py, by function name.
ALIASES = {"_parse_shape": "shape", "_check_dtype": "dtype", "_str_list": "list[str] (or one str)"}


# --------------------------------------------------------------------------- formatting


def _alias(metadata: list[Any]) -> str | None:
    for item in metadata:
        func = getattr(item, "func", None)
        name = getattr(func, "__name__", None)
        if name in ALIASES:
            return ALIASES[name]
    return None


def type_name(annotation: Any, metadata: list[Any] | None = None) -> str:
    """A short, readable name for a field's type."""
    alias = _alias(metadata or [])
    if alias:
        return alias
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return type_name(args[0], list(args[1:]))
    if origin is typing.Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        parts = [type_name(a) for a in args if a is not type(None)]
        if type(None) in args:
            parts.append("null")
        return " | ".join(parts)
    if origin in (list, dict, tuple, set, frozenset):
        inner = ", ".join("..." if a is Ellipsis else type_name(a) for a in args)
        return f"{origin.__name__}[{inner}]"
    if annotation is typing.Any:
        return "any"
    if annotation is SecretStr:
        return "secret str"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def constraints(info: FieldInfo) -> list[str]:
    text = info.annotation is str
    out = []
    for item in info.metadata:
        if isinstance(item, annotated_types.Ge):
            out.append(f">= {item.ge}")
        elif isinstance(item, annotated_types.Gt):
            out.append(f"> {item.gt}")
        elif isinstance(item, annotated_types.Le):
            out.append(f"<= {item.le}")
        elif isinstance(item, annotated_types.Lt):
            out.append(f"< {item.lt}")
        elif isinstance(item, annotated_types.MinLen) and text and item.min_length == 1:
            out.append("non-empty")
        elif isinstance(item, annotated_types.MinLen):
            unit = "character" if text else "item"
            out.append(f"at least {item.min_length} {unit}{'s' if item.min_length != 1 else ''}")
        elif isinstance(item, annotated_types.MaxLen):
            out.append(f"at most {item.max_length}")
    return out


def default_text(info: FieldInfo) -> str:
    if info.is_required():
        return "*required*"
    factory = info.default_factory
    value = factory() if factory is not None else info.default  # type: ignore[call-arg]
    if value is PydanticUndefined:
        return "*required*"
    if isinstance(value, BaseModel):
        return f"see `{type(value).__name__}`"
    return f"`{json.dumps(value, default=str)}`"


def cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def doc(obj: Any) -> str:
    """The docstring, paragraphs kept, indentation removed."""
    import inspect

    text = inspect.getdoc(obj) or ""
    return text.replace("``", "`")


def model_table(model: type[BaseModel], skip: tuple[str, ...] = ("type", "kind")) -> list[str]:
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    for name, info in model.model_fields.items():
        if name in skip:
            continue
        description = info.description or ""
        checks = constraints(info)
        if checks:
            description = (description + " " if description else "") + f"({', '.join(checks)})"
        rows.append(
            f"| `{name}` | {cell(type_name(info.annotation, info.metadata))} | "
            f"{cell(default_text(info))} | {cell(description)} |"
        )
    if len(rows) == 2:
        return ["No options."]
    return rows


def model_section(model: type[BaseModel], level: int = 3) -> list[str]:
    lines = [f"{'#' * level} {model.__name__}", ""]
    if "type" in model.model_fields:
        lines += [f"`type: {model.model_fields['type'].default}`", ""]
    text = doc(model)
    if text:
        lines += [text, ""]
    lines += model_table(model)
    if model.model_config.get("extra") != "forbid":
        lines += ["", "Unknown keys are ignored."]
    return [*lines, ""]


# --------------------------------------------------------------------------- sections


def streamer_sections() -> list[str]:
    from airflow_provider_lclstream.config import detectors
    from airflow_provider_lclstream.config import streamer_components as comp
    from airflow_provider_lclstream.config.streamer import COMPONENTS, StreamerConfig

    lines = [
        "## LCLStreamer configuration",
        "",
        "`StreamerConfig` is what `lclstreamer -c FILE` reads (flat format; the sectioned format "
        "is converted to it first, see [LCLStreamer configuration](../streamer-config.md)).",
        "",
        *model_section(StreamerConfig, level=3)[2:],
    ]
    for key, component in COMPONENTS.items():
        lines += [f"## {component.title}", ""]
        lines += [f"Classes: {', '.join(f'`{n}`' for n in component.classes)}.", ""]
        if component.aliases:
            lines += alias_table(component.aliases)
        for model in component.classes.values():
            lines += model_section(model)
        if key == "processing_pipeline":
            lines += ["### Reduction steps (`processing_pipeline.steps[]`)", ""]
            lines += [
                "Each step names the data source it changes in `field`; steps run in order, "
                "per event, before batching. Step kinds: "
                + ", ".join(f"`{k}`" for k in comp.STEP_KINDS)
                + ".",
                "",
            ]
            for step, _engine in comp.STEPS.values():
                kind = step.model_fields["kind"].default
                lines += [f"#### `kind: {kind}` ({step.__name__})", "", doc(step), ""]
                lines += [*model_table(step, skip=("kind",)), ""]
            lines += [""]
    lines += [
        "## Compression names",
        "",
        "`HDF5BinarySerializer.compression` and `TransferRequest.compression`: "
        + ", ".join(f"`{c}`" for c in typing.get_args(comp.Compression))
        + "; `null` (or the string `none`) for no compression.",
        "",
        "## Synthetic detector shapes",
        "",
        "| `SyntheticDetector.detector` | raw frame shape |",
        "|---|---|",
        *[f"| `{k}` | `{v}` |" for k, v in detectors.DETECTOR_SHAPES.items()],
        "",
        "Frames are a pedestal of "
        f"{detectors.SYNTHETIC_PEDESTAL:g} plus Gaussian noise of {detectors.SYNTHETIC_NOISE:g}, "
        f"with {detectors.SYNTHETIC_PEAKS_PER_FRAME} peaks of up to "
        f"{detectors.SYNTHETIC_PEAK_INTENSITY:g} per frame (defaults).",
        "",
    ]
    return lines


def alias_table(aliases: Mapping[str, Any]) -> list[str]:
    """Old upstream class names and what each is rewritten to before validation."""
    rows = [
        "Old upstream names are rewritten before validation:",
        "",
        "| old name | becomes | with |",
        "|---|---|---|",
    ]
    for name, translate in aliases.items():
        out = translate({"type": name})
        fixed = {k: v for k, v in out.items() if k not in ("type", "legacy_type")}
        with_text = ", ".join(f"`{k}: {json.dumps(v)}`" for k, v in fixed.items())
        raw = translate({"type": name, "calibration": False})
        if raw.get("psana_fields") != out.get("psana_fields"):
            with_text += f" (`calibration: false`: `{json.dumps(raw.get('psana_fields'))}`)"
        own = translate({"type": name, "psana_function": "F"})
        if own.get("psana_fields") == ["F"] and out.get("psana_fields") != ["F"]:
            with_text += " (a `psana_function` replaces it)"
        rows.append(f"| `{name}` | `{out['type']}` | {with_text or '-'} |")
    return [*rows, ""]


def transfer_sections() -> list[str]:
    from airflow_provider_lclstream.config.transfer import BackendChoice, TransferRequest

    return [
        "## Transfer request",
        "",
        "The document behind a transfer: the `lclstream_transfer` DAG's conf `request`, the "
        "transfer API's `POST /v1/transfers` body, `transfer_task_group(request)`.",
        "",
        *model_section(TransferRequest),
        *model_section(BackendChoice),
        "`backend` names the job backend, `conn_id` its Airflow connection (default "
        "`lclstream_<backend>`; none for `local`), `attributes` go to the backend as job "
        "options (sbatch long options for `slurm_cli`/`sfapi`, slurmrestd job fields for "
        "`slurm`/`s3m`).",
        "",
        *backend_table(),
    ]


def backend_table() -> list[str]:
    """The job-backend registry (``config/backends.py``): every name a request may use."""
    from airflow_provider_lclstream.config.backends import BACKENDS

    rows = [
        "### Job backends",
        "",
        'The backend registry (`config/backends.py`; `register_backend` adds to it). "Pins a '
        "node\": the backend can run a job on a named host, so a request's `buffer_host` pins "
        "the buffer there (SLURM's `--nodelist`; a request that pins another backend's buffer "
        "is refused). Pinned or not, the buffer's address is its job's node, from the backend.",
        "",
        "| `backend` | connection type | what | pins a node |",
        "|---|---|---|---|",
    ]
    for info in BACKENDS.values():
        pins = "yes" if info.pins_node else "no"
        rows.append(f"| `{info.name}` | `{info.conn_type}` | {info.description} | {pins} |")
    return [*rows, ""]


def job_sections() -> list[str]:
    from airflow_provider_lclstream.config.job import JobSpec, ResourceSpec

    return [
        "## Job spec",
        "",
        "What every job backend submits (`SubmitJobOperator(job=...)`, `JobBackend.submit`).",
        "",
        *model_section(JobSpec),
        *model_section(ResourceSpec),
    ]


def airflow_config_sections() -> list[str]:
    from airflow_provider_lclstream.get_provider_info import get_provider_info
    from airflow_provider_lclstream.hooks.settings import JOB_ENVIRONMENT, OPTIONS, SECTION

    section = get_provider_info()["config"][SECTION]
    lines = [
        f"## Airflow configuration: `[{SECTION}]`",
        "",
        section["description"],
        "",
        f"Set an option in `airflow.cfg` under `[{SECTION}]` or as the environment variable "
        f"`AIRFLOW__{SECTION.upper()}__<OPTION>` of the Airflow processes that read it; "
        "`airflow config list` shows the section. The old variable of each option still works "
        "while the option is not set the Airflow way, with a `FutureWarning` naming the option.",
        "",
        "| option | type | default | environment variable | replaces | description |",
        "|---|---|---|---|---|---|",
    ]
    for key, option in section["options"].items():
        old = OPTIONS[key].old_env
        lines.append(
            f"| `{key}` | {option['type']} | `{json.dumps(option['default'])}` | "
            f"`{OPTIONS[key].env}` | {f'`{old}`' if old else ''} | "
            f"{cell(option['description'].replace('``', '`'))} |"
        )
    lines += [
        "",
        "### Job environment variables",
        "",
        "Not Airflow settings: the streamer, buffer and consumer jobs read these from their own "
        "environment (they run without Airflow).",
        "",
        "| variable | meaning |",
        "|---|---|",
        *[f"| `{name}` | {cell(meaning)} |" for name, meaning in JOB_ENVIRONMENT.items()],
        "",
    ]
    return lines


def connection_sections() -> list[str]:
    from airflow_provider_lclstream.config.connections import CONNECTION_SETTINGS

    lines = [
        "## Connection settings",
        "",
        "Each `lclstream_*` connection is parsed into a frozen settings model; the mapped form "
        "fields are read first, then every key of the extra JSON (which may also set the mapped "
        "ones); an empty value means unset. All missing required keys are reported at once. For "
        "the job connections, a host without a scheme gets `https://`, and a port and the "
        "schema field (of a connection URI) are appended to it (`host:port/schema`). One page "
        "per type lists its fields (the same models give Airflow's connection form):",
        "",
        *[
            f"- [`{conn_type}`](../connections/{conn_type}.md): {settings.hook_name}"
            for conn_type, settings in CONNECTION_SETTINGS.items()
        ],
        "",
    ]
    return lines


def connection_page(conn_type: str) -> str:
    """docs/connections/<conn_type>.md: the form and the extra keys of one connection type."""
    from airflow_provider_lclstream.config.connections import (
        CONNECTION_SETTINGS,
        STANDARD_FIELDS,
        BackendSettings,
        conn_fields,
        ui_field_behaviour,
    )

    settings = CONNECTION_SETTINGS[conn_type]
    behaviour = ui_field_behaviour(settings)
    hook = settings.hook.rpartition(".")[2]
    lines = [
        f"# `{conn_type}`: {settings.hook_name}",
        "",
        '!!! note "Generated file"',
        "    Written by `scripts/gen_config_reference.py` from "
        f"`{settings.__module__}.{settings.__name__}`; "
        "do not edit by hand.",
        "",
        doc(settings),
        "",
        f"Hook `airflow_provider_lclstream.hooks.{settings.hook}` (`{hook}`)"
        + (f", backend `{settings.backend}`." if issubclass(settings, BackendSettings) else "."),
        "",
        "## Form fields",
        "",
        "| field | label | setting | required | description |",
        "|---|---|---|---|---|",
    ]
    for field in STANDARD_FIELDS:
        key = settings.fields.get(field)
        if key is None:
            continue
        info = settings.model_fields[key]
        lines.append(
            f"| {field} | {cell(behaviour['relabeling'][field])} | `{key}` | "
            f"{'yes' if key in settings.required else 'no'} | {cell(doc_text(info.description))} |"
        )
    hidden = ", ".join(behaviour["hidden-fields"])
    lines += ["", f"Hidden in the form: {hidden}." if hidden else "", ""]
    fields = conn_fields(settings)
    if fields:
        lines += [
            "## Extra fields",
            "",
            "Shown as fields of their own in Airflow's connection form and stored in the "
            "connection's extra JSON under these keys.",
            "",
            "| key | label | type | default | required | description |",
            "|---|---|---|---|---|---|",
        ]
        for key, field in fields.items():
            schema = field["schema"]
            kind = (
                schema["type"] if isinstance(schema["type"], str) else " or ".join(schema["type"])
            )
            if "enum" in schema:
                kind += " (" + ", ".join(f"`{v}`" for v in schema["enum"]) + ")"
            default = f"`{json.dumps(schema['default'])}`" if "default" in schema else ""
            lines.append(
                f"| `{key}` | {cell(field['label'])} | {cell(kind)} | {cell(default)} | "
                f"{'yes' if key in settings.required else 'no'} | "
                f"{cell(doc_text(field['description']))} |"
            )
        lines.append("")
    example = example_connection(settings)
    lines += [
        "## Example",
        "",
        "As an environment variable of the Airflow processes (placeholders in `<...>`):",
        "",
        "```bash",
        f"AIRFLOW_CONN_{conn_type.upper()}='{json.dumps(example)}'",
        "```",
        "",
    ]
    return "\n".join(lines)


def doc_text(text: str | None) -> str:
    return (text or "").replace("``", "`")


def example_connection(settings: Any) -> dict[str, Any]:
    """A connection JSON with the required settings as ``<placeholders>``."""
    example: dict[str, Any] = {"conn_type": settings.conn_type}
    mapped = {key: field for field, key in settings.fields.items()}
    extra = {}
    for key in settings.required:
        value = settings.placeholders.get(mapped.get(key, ""), f"<{key}>")
        if key in mapped:
            example[mapped[key]] = value
        else:
            extra[key] = value
    if extra:
        example["extra"] = extra
    return example


def render() -> str:
    lines = [
        HEADER,
        *streamer_sections(),
        *transfer_sections(),
        *job_sections(),
        *airflow_config_sections(),
        *connection_sections(),
    ]
    return tidy("\n".join(lines))


def tidy(text: str) -> str:
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.rstrip("\n") + "\n"


def render_all(output: Path) -> dict[Path, str]:
    """Every generated page: the configuration reference and one page per connection type."""
    from airflow_provider_lclstream.config.connections import CONNECTION_SETTINGS

    pages = {output: render()}
    for conn_type in CONNECTION_SETTINGS:
        pages[CONNECTIONS_DIR / f"{conn_type}.md"] = tidy(connection_page(conn_type))
    return pages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the page is out of date")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="page to write")
    args = parser.parse_args(argv)
    pages = render_all(args.output)
    stale = sorted(
        str(p) for p in CONNECTIONS_DIR.glob("*.md") if p not in pages
    )  # a page of a connection type that is gone
    status = 0
    for path, text in pages.items():
        current = path.read_text() if path.exists() else ""
        if current == text:
            continue
        if args.check:
            diff = difflib.unified_diff(
                current.splitlines(), text.splitlines(), "committed", "generated", lineterm=""
            )
            print("\n".join(list(diff)[:60]))
            print(f"{path} is out of date: run scripts/gen_config_reference.py")
            status = 1
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    for path in stale:
        if args.check:
            print(f"{path} belongs to no connection type: run scripts/gen_config_reference.py")
            status = 1
        else:
            Path(path).unlink()
            print(f"removed {path}")
    return status


if __name__ == "__main__":
    sys.exit(main())
