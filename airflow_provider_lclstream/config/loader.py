"""Read LCLStreamer YAML (flat or sectioned, optionally a Jinja template) into ``StreamerConfig``.

Every failure is a :class:`~airflow_provider_lclstream.exceptions.ConfigError` naming the YAML
path of the bad value as written in the file (sectioned files keep their sectioned paths).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
import yaml
from jinja2 import meta
from pydantic import BaseModel, ValidationError

from airflow_provider_lclstream.config.streamer import (
    CLASS_NAMES,
    COMPONENTS,
    STEP_KINDS,
    STEPS,
    StreamerConfig,
)
from airflow_provider_lclstream.exceptions import ConfigError

__all__ = [
    "dump_flat",
    "is_sectioned",
    "load_streamer_config",
    "parse_streamer_config",
    "render_template",
    "template_variables",
    "to_flat",
    "validate_streamer_config",
]

_SINGLE = ("event_source", "processing_pipeline", "data_serializer")
_HEADER_KEYS = ("source_identifier", "skip_incomplete_events", *_SINGLE, "data_handlers")
_SECTIONED_TOP = ("lclstreamer", *_SINGLE, "data_sources", "data_handlers")
_MODELS: dict[str, type[BaseModel]] = {
    **{name: cls for comp in COMPONENTS.values() for name, cls in comp.classes.items()},
    **{kind: model for kind, (model, _) in STEPS.items()},
}

# --------------------------------------------------------------------------- templates


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False
    )


def _is_template(text: str) -> bool:
    return "{{" in text or "{%" in text


def template_variables(text: str) -> set[str]:
    """The names a Jinja-templated config needs (empty for a plain YAML file)."""
    if not _is_template(text):
        return set()
    try:
        return set(meta.find_undeclared_variables(_environment().parse(text)))
    except jinja2.TemplateSyntaxError as err:
        raise ConfigError(f"line {err.lineno}", f"template syntax error: {err.message}") from None


def render_template(text: str, values: Mapping[str, object] | None = None) -> str:
    """Render ``{{ name }}`` placeholders; all missing names are reported at once."""
    values = dict(values or {})
    missing = sorted(template_variables(text) - set(values))
    if missing:
        raise ConfigError(
            "",
            f"template values missing: {', '.join(missing)} "
            "(give each as an override, e.g. name=value)",
        )
    if not _is_template(text):
        return text
    try:
        return _environment().from_string(text).render(**values)
    except jinja2.TemplateError as err:
        raise ConfigError("", f"template cannot be rendered: {err}") from None


# --------------------------------------------------------------------------- sectioned -> flat


def is_sectioned(data: Mapping[str, Any]) -> bool:
    """Whether a parsed document uses the older format with a ``lclstreamer:`` section."""
    return "lclstreamer" in data


def _known(component: str, name: Any) -> bool:
    comp = COMPONENTS[component]
    return isinstance(name, str) and (name in comp.classes or name in comp.aliases)


def to_flat(data: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Turn a sectioned document into the flat format.

    Returns the flat dict and a map from flat paths to the sectioned paths they came from
    (``data_handlers[0]`` -> ``data_handlers.BinaryFileWritingDataHandler``), used to name
    errors as the user wrote them. Flat documents come back unchanged with an empty map.
    """
    if not is_sectioned(data):
        return dict(data), {}
    problems: list[tuple[str, str]] = []
    header = data["lclstreamer"]
    if not isinstance(header, Mapping):
        raise ConfigError("lclstreamer", "must be a mapping naming one class per component")
    for key in data:
        if key not in _SECTIONED_TOP:
            problems.append((str(key), f"unknown key; allowed keys: {list(_SECTIONED_TOP)}"))
    for key in header:
        if key not in _HEADER_KEYS:
            problems.append((f"lclstreamer.{key}", f"unknown key; allowed: {list(_HEADER_KEYS)}"))
    for key in (*_SINGLE, "data_handlers"):
        if key not in header:
            problems.append(
                (f"lclstreamer.{key}", f"missing; choose one of {COMPONENTS[key].choices()}")
            )

    flat: dict[str, Any] = {
        k: header[k] for k in ("source_identifier", "skip_incomplete_events") if k in header
    }
    if "data_sources" in data:
        flat["data_sources"] = data["data_sources"]
    paths: dict[str, str] = {}

    def entry(component: str, name: Any, chosen_at: str, flat_path: str) -> Any:
        if not _known(component, name):
            problems.append(
                (
                    chosen_at,
                    f"unknown {COMPONENTS[component].name} class {name!r}; "
                    f"known: {COMPONENTS[component].choices()}",
                )
            )
            return None
        section = data.get(component)
        if not isinstance(section, Mapping) or name not in section:
            problems.append(
                (
                    f"{component}.{name}",
                    f"missing: {chosen_at} chooses {name!r} but the {component} section has "
                    f"no entry for it (write '{name}: {{}}' if it takes no options)",
                )
            )
            return None
        options = section[name]
        if options is None:
            options = {}
        if not isinstance(options, Mapping):
            problems.append((f"{component}.{name}", "must be a mapping of options (or {})"))
            return None
        paths[f"{flat_path}.type"] = chosen_at
        paths[flat_path] = f"{component}.{name}"
        return {"type": name, **{k: v for k, v in options.items() if k != "type"}}

    for component in _SINGLE:
        if component in header:
            flat[component] = entry(
                component, header[component], f"lclstreamer.{component}", component
            )
    names = header.get("data_handlers")
    if isinstance(names, str):
        names = [names]
    if names is not None and not isinstance(names, list):
        problems.append(("lclstreamer.data_handlers", "must be a list of handler class names"))
    elif names is not None:
        flat["data_handlers"] = [
            entry("data_handlers", name, f"lclstreamer.data_handlers[{i}]", f"data_handlers[{i}]")
            for i, name in enumerate(names)
        ]
    if problems:
        raise ConfigError(problems[0][0], problems[0][1], tuple(problems))
    return flat, paths


# --------------------------------------------------------------------------- errors


def _is_tag(loc: tuple[int | str, ...], i: int) -> bool:
    """Whether ``loc[i]`` is the union tag pydantic inserts (not a key from the file)."""
    head = loc[0]
    if i == 1 and head in _SINGLE:
        return loc[i] in CLASS_NAMES
    if i == 2 and head in ("data_sources", "data_handlers"):
        return loc[i] in CLASS_NAMES
    if i == 4 and head == "processing_pipeline" and loc[2] == "steps":
        return loc[i] in STEP_KINDS
    return False


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for i, part in enumerate(loc):
        if _is_tag(loc, i):
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _owner(loc: tuple[int | str, ...]) -> type[BaseModel]:
    """The model a key at ``loc`` belongs to (for listing allowed keys)."""
    for i in range(len(loc) - 2, -1, -1):
        if _is_tag(loc, i):
            return _MODELS[str(loc[i])]
    return StreamerConfig


def _message(err: Any) -> tuple[str, str]:
    loc: tuple[int | str, ...] = tuple(err["loc"])
    kind: str = err["type"]
    ctx: dict[str, Any] = err.get("ctx") or {}
    value = err.get("input")
    path = _path(loc)
    if kind == "config":
        return str(ctx["path"]), str(ctx["message"])
    if kind == "at_key":
        return f"{path}.{ctx['key']}", str(ctx["message"])
    if kind == "unknown_class":
        return f"{path}.type", str(ctx["message"])
    if kind in ("shape", "dtype"):
        return path, str(ctx["message"])
    if kind == "union_tag_invalid":
        return f"{path}.kind", f"unknown step kind {ctx.get('tag')!r}; known: {list(STEP_KINDS)}"
    if kind == "union_tag_not_found":
        return f"{path}.kind", f"missing step kind; choose one of {list(STEP_KINDS)}"
    if kind == "missing":
        return path, "missing required key"
    if kind == "extra_forbidden":
        allowed = [k for k in _owner(loc).model_fields if k != "type"]
        return path, f"unknown key; allowed keys: {allowed}"
    if kind == "literal_error":
        choices = sorted(re.findall(r"'([^']*)'", str(ctx.get("expected", ""))))
        return path, f"{value!r} is not one of {choices}"
    if kind == "value_error":
        return path, str(ctx.get("error", err["msg"]))
    return path, f"{err['msg']} (got {value!r})"


def _config_error(exc: ValidationError, paths: Mapping[str, str]) -> ConfigError:
    problems: list[tuple[str, str]] = []
    for err in exc.errors():
        path, message = _message(err)
        for flat_prefix in sorted(paths, key=len, reverse=True):
            if path == flat_prefix or path.startswith((flat_prefix + ".", flat_prefix + "[")):
                path = paths[flat_prefix] + path[len(flat_prefix) :]
                break
        if (path, message) not in problems:
            problems.append((path, message))
    return ConfigError(problems[0][0], problems[0][1], tuple(problems))


# --------------------------------------------------------------------------- entry points


def _set_path(data: dict[str, Any], path: str, value: Any) -> None:
    tokens: list[str | int] = [
        int(t[1:-1]) if t.startswith("[") else t for t in re.findall(r"\[\d+\]|[^.\[\]]+", path)
    ]
    target: Any = data
    try:
        for token in tokens[:-1]:
            target = target[token]
        target[tokens[-1]] = value
    except (KeyError, IndexError, TypeError) as err:
        raise ConfigError(path, f"cannot set this path in the config ({err!r})") from None


def validate_streamer_config(
    data: Mapping[str, Any], patch: Mapping[str, Any] | None = None
) -> StreamerConfig:
    """Validate a parsed document (flat or sectioned), after setting ``patch`` values.

    ``patch`` keys are flat-format paths (``data_handlers[0].urls``), applied after a sectioned
    document has been converted: tests use it to point handlers at 127.0.0.1.
    """
    if not isinstance(data, Mapping):
        raise ConfigError("", f"expected a mapping at the top level, got {type(data).__name__}")
    flat, paths = to_flat(data)
    if patch:
        flat = copy.deepcopy(flat)
    for path, value in (patch or {}).items():
        _set_path(flat, path, value)
    try:
        return StreamerConfig.model_validate(flat)
    except ValidationError as exc:
        raise _config_error(exc, paths) from None


def parse_streamer_config(
    text: str,
    overrides: Mapping[str, object] | None = None,
    *,
    patch: Mapping[str, Any] | None = None,
) -> StreamerConfig:
    """Parse YAML text; ``overrides`` fill a Jinja template's ``{{ name }}`` values."""
    rendered = render_template(text, overrides)
    try:
        data = yaml.safe_load(rendered)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(where, f"invalid YAML: {err}") from None
    if data is None:
        raise ConfigError("", "the configuration is empty")
    return validate_streamer_config(data, patch)


def load_streamer_config(
    source: str | Path,
    overrides: Mapping[str, object] | None = None,
    *,
    patch: Mapping[str, Any] | None = None,
) -> StreamerConfig:
    """Read and validate a configuration file (see :func:`parse_streamer_config`)."""
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError("", f"cannot read configuration file {path}: {err}") from None
    return parse_streamer_config(text, overrides, patch=patch)


def dump_flat(config: StreamerConfig) -> dict[str, Any]:
    """The flat upstream YAML form of ``config`` (``yaml.safe_dump``-able).

    Upstream spellings are used (``array_shape: "4,4,4"``, one ``psana_fields`` as a string);
    keys upstream lacks appear only when set (``steps``, ``legacy_type``).
    """
    out = config.model_dump(mode="json", exclude_none=True)

    def type_first(entry: dict[str, Any]) -> dict[str, Any]:
        return {"type": entry["type"], **{k: v for k, v in entry.items() if k != "type"}}

    for name, source in out["data_sources"].items():
        if "array_shape" in source:
            shape = [str(d) for d in source["array_shape"]]
            source["array_shape"] = ",".join(shape) + ("," if len(shape) == 1 else "")
        if "psana_fields" in source:
            fields = source["psana_fields"]
            if not fields:
                del source["psana_fields"]
            elif len(fields) == 1:
                source["psana_fields"] = fields[0]
        out["data_sources"][name] = type_first(source)
    if not out["processing_pipeline"].get("steps"):
        out["processing_pipeline"].pop("steps", None)
    for key in _SINGLE:
        out[key] = type_first(out[key])
    out["data_handlers"] = [type_first(h) for h in out["data_handlers"]]
    return out
