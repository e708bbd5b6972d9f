"""Consumer templates: commands an admin defines, with typed parameters a request fills in.

A request names a template (``consumer_template``) and gives values for its parameters
(``consumer_params``); nothing a requester types is ever parsed by a shell. The command is a
list of arguments; ``{name}`` in an argument is replaced by the parameter's validated value and
the whole list is quoted as one command line (``shlex.join``). Example (JSON, as in
``[lclstream] consumer_templates`` or the Airflow Variable ``lclstream_consumer_templates``)::

    {"crystfel": {
        "description": "indexamajig on the stream",
        "command": ["indexamajig", "-i", "$LCLSTREAM_URL", "-g", "{geometry}", "-j", "{threads}"],
        "params": {"geometry": {"type": "path", "default": "/sdf/geom/epix.geom"},
                   "threads": {"type": "integer", "minimum": 1, "maximum": 128, "default": 8}}}}

``$LCLSTREAM_URL`` and ``$LCLSTREAM_TRANSPORT`` (the buffer's output) are the only names that
the rendered command line expands, and only where the admin wrote them.

Raw ``consumer_command`` (a shell line) stays for admins: see :func:`check_raw_command`.
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from airflow_provider_lclstream.exceptions import LCLStreamError

NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
PLACEHOLDER = re.compile(r"\{([A-Za-z][A-Za-z0-9_]*)\}")
#: strings a parameter accepts unless its template gives a ``pattern``: no shell syntax, no
#: leading dash (so a value cannot become an option of the command)
DEFAULT_STRING = r"[A-Za-z0-9_.,:@+=/][A-Za-z0-9_.,:@+=/-]{0,1023}"
PATH = re.compile(r"/?[A-Za-z0-9_.+-][A-Za-z0-9_./+-]{0,1023}")
#: names the rendered command may expand (the job's environment sets them)
EXPANDED = ("LCLSTREAM_URL", "LCLSTREAM_TRANSPORT")
ParamValue = str | int | float | bool


class ConsumerTemplateError(LCLStreamError, ValueError):
    """A template or its parameters are wrong; the message names the template and parameter."""


class ParamSpec(BaseModel):
    """One typed parameter of a template."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["string", "integer", "number", "boolean", "path"] = "string"
    description: str = ""
    default: ParamValue | None = None
    required: bool = False
    choices: list[ParamValue] | None = None
    minimum: float | None = None
    maximum: float | None = None
    pattern: str | None = Field(default=None, description="full-match regex for strings")

    def check(self, name: str, value: Any) -> ParamValue:
        """The value, converted to the parameter's type; raise naming what is wrong."""
        value = self._typed(name, value)
        if self.choices is not None and value not in self.choices:
            raise ConsumerTemplateError(f"{name}: {value!r} is not one of {self.choices}")
        if isinstance(value, int | float) and not isinstance(value, bool):
            if self.minimum is not None and value < self.minimum:
                raise ConsumerTemplateError(f"{name}: {value} is below the minimum {self.minimum}")
            if self.maximum is not None and value > self.maximum:
                raise ConsumerTemplateError(f"{name}: {value} is above the maximum {self.maximum}")
        return value

    def _typed(self, name: str, value: Any) -> ParamValue:
        kind = self.type
        if kind == "boolean":
            if isinstance(value, bool):
                return value
            raise ConsumerTemplateError(f"{name}: expected true or false, got {value!r}")
        if kind in ("integer", "number"):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConsumerTemplateError(f"{name}: expected a {kind}, got {value!r}")
            if kind == "integer":
                if value != int(value):
                    raise ConsumerTemplateError(f"{name}: expected an integer, got {value!r}")
                return int(value)
            return float(value)
        if not isinstance(value, str):
            raise ConsumerTemplateError(f"{name}: expected a string, got {value!r}")
        if kind == "path":
            if not PATH.fullmatch(value) or ".." in value.split("/"):
                raise ConsumerTemplateError(f"{name}: {value!r} is not a plain path")
            return value
        if not re.fullmatch(self.pattern or DEFAULT_STRING, value):
            allowed = (
                f"must match {self.pattern!r}"
                if self.pattern
                else ("letters, digits and _ . , : @ + = / -, not starting with -")
            )
            raise ConsumerTemplateError(f"{name}: {value!r} is not allowed ({allowed})")
        return value


class ConsumerTemplate(BaseModel):
    """A command (argument list) with ``{param}`` placeholders, and its parameters."""

    model_config = ConfigDict(extra="forbid")

    command: list[str] = Field(min_length=1)
    params: dict[str, ParamSpec] = Field(default_factory=dict)
    description: str = ""

    @field_validator("params")
    @classmethod
    def _names(cls, value: dict[str, ParamSpec]) -> dict[str, ParamSpec]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
                raise ValueError(f"{name!r} is not a parameter name (letters, digits, _)")
        return value

    def model_post_init(self, _: Any) -> None:
        used = {m for arg in self.command for m in PLACEHOLDER.findall(arg)}
        unknown = sorted(used - set(self.params))
        if unknown:
            raise ValueError(f"the command uses undeclared parameters {unknown}")

    def argv(self, values: dict[str, Any]) -> list[str]:
        """The command's arguments with the parameters filled in (validated)."""
        unknown = sorted(set(values) - set(self.params))
        if unknown:
            raise ConsumerTemplateError(
                f"unknown parameters {unknown}; this template takes {sorted(self.params)}"
            )
        filled: dict[str, str] = {}
        missing = []
        for name, spec in self.params.items():
            if name in values:
                filled[name] = _text(spec.check(name, values[name]))
            elif spec.default is not None:
                filled[name] = _text(spec.check(name, spec.default))
            elif spec.required:
                missing.append(name)
            else:
                filled[name] = ""
        if missing:
            raise ConsumerTemplateError(f"missing required parameters {missing}")
        return [PLACEHOLDER.sub(lambda m: filled[m.group(1)], arg) for arg in self.command]

    def command_line(self, values: dict[str, Any]) -> str:
        """One shell line: every argument quoted; only ``$LCLSTREAM_URL``/``_TRANSPORT`` the
        admin wrote in the template expand."""
        parts = []
        for arg in self.argv(values):
            quoted = shlex.quote(arg)
            for name in EXPANDED:  # re-open the quote around the admin's own variables
                quoted = quoted.replace(f"${name}", f"'\"${name}\"'")
            parts.append(quoted)
        return " ".join(parts)


def _text(value: ParamValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class ConsumerTemplates(BaseModel):
    """The admin's named templates."""

    templates: dict[str, ConsumerTemplate] = Field(default_factory=dict)

    @classmethod
    def parse(cls, text: str | None, where: str) -> ConsumerTemplates:
        """Templates from JSON text (empty: none); ``where`` names the source in errors."""
        if not text or not text.strip():
            return cls()
        try:
            data = json.loads(text)
        except ValueError as err:
            raise ConsumerTemplateError(f"{where} is not valid JSON: {err}") from None
        if not isinstance(data, dict):
            raise ConsumerTemplateError(f"{where} must be a JSON object of named templates")
        for name in data:
            if not NAME.fullmatch(str(name)):
                raise ConsumerTemplateError(f"{where}: {name!r} is not a template name")
        try:
            return cls(templates=data)
        except ValidationError as err:
            first = err.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            raise ConsumerTemplateError(f"{where}: {loc}: {first['msg']}") from None

    def command_line(self, name: str, values: dict[str, Any]) -> str:
        """The rendered command of template ``name``; unknown names list the known ones."""
        template = self.templates.get(name)
        if template is None:
            known = ", ".join(sorted(self.templates)) or "none are defined"
            raise ConsumerTemplateError(f"no consumer template {name!r} (known: {known})")
        try:
            return template.command_line(values)
        except ConsumerTemplateError as err:
            raise ConsumerTemplateError(f"consumer template {name!r}: {err}") from None


def check_raw_command(command: str | None, *, admin: bool, who: str | None) -> None:
    """Refuse a raw ``consumer_command`` from anyone but an admin."""
    if command and not admin:
        raise PermissionError(
            f"consumer_command (a raw shell command) is for admins only and {who or 'this caller'}"
            " is not one ([lclstream] api_admins); choose a consumer_template instead"
        )
