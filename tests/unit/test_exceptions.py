"""Every exception class the package defines derives from ``LCLStreamError``, so a caller can
catch all of the package's errors at once (and still catch the built-in base each one also
keeps, such as ``ValueError``)."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import airflow_provider_lclstream
from airflow_provider_lclstream.exceptions import LCLStreamError

PACKAGE = airflow_provider_lclstream.__name__
ROOT = Path(airflow_provider_lclstream.__file__).parent


def _module_names() -> list[str]:
    return sorted(
        info.name
        for info in pkgutil.walk_packages([str(ROOT)], prefix=f"{PACKAGE}.")
        if "__main__" not in info.name
    )


def _defined_classes(module_name: str) -> set[str]:
    """Names of the classes a module's source defines (also in modules that cannot be imported
    here, for a missing optional dependency)."""
    path = ROOT.joinpath(*module_name.split(".")[1:])
    source = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    tree = ast.parse(source.read_text())
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}


def test_every_exception_class_derives_from_lclstream_error() -> None:
    offenders: list[str] = []
    unimportable: list[str] = []
    checked = 0
    for name in _module_names():
        try:
            module = importlib.import_module(name)
        except ImportError as err:  # an optional dependency (torch, psana, ...) is missing
            unimportable.append(f"{name}: {err}")
            continue
        defined = _defined_classes(name)
        for cls_name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != name or cls_name not in defined:
                continue
            if issubclass(cls, BaseException) and not issubclass(cls, Warning):
                checked += 1
                if not issubclass(cls, LCLStreamError):
                    offenders.append(f"{name}.{cls_name}{tuple(b.__name__ for b in cls.__mro__)}")
    assert not offenders, "exceptions that bypass LCLStreamError:\n" + "\n".join(offenders)
    assert checked >= 20, (checked, unimportable)  # the walk found the package's exceptions
    # modules skipped for a missing optional dependency must not hide exception classes
    for entry in unimportable:
        name = entry.split(":")[0]
        suspicious = {c for c in _defined_classes(name) if c.endswith(("Error", "Exception"))}
        assert not suspicious, f"cannot check {suspicious} in {entry}"


def test_compatible_bases_are_kept() -> None:
    """Callers that catch the built-in base still catch the error."""
    from airflow_provider_lclstream.api.store import TransferFinished, TransferNotFound
    from airflow_provider_lclstream.config.consumers import ConsumerTemplateError

    assert issubclass(TransferNotFound, LookupError)
    assert issubclass(TransferFinished, RuntimeError)
    assert issubclass(ConsumerTemplateError, ValueError)
