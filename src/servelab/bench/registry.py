"""The target registry: which ``kind`` names in an experiment map to which spec and target classes.

A target kind is two classes: a pydantic spec (a subclass of
:class:`~servelab.bench.spec.TargetSpecBase` whose ``kind`` field is ``Literal["<kind>"]``) that
validates the target's YAML mapping, and a :class:`~servelab.bench.targets.BenchTarget` that
deploys, serves and cools down each run. Adding a kind is one module that calls::

    register_target("aws-lambda", AwsLambdaTargetSpec, "servelab.cloud.aws_lambda:AwsLambdaTarget")

Either class may be given as a ``"module:attr"`` string, imported on first use: a cloud target's
module can then be registered without importing its SDK (boto3) until a run needs it.

Where registrations come from (looked up once, on the first question about a kind that is not
built in, or on the first listing of all kinds):

1. the built-in kinds below (``serverless``, ``server``, ``gpu-server``, ``managed``, ``http``);
2. any module named in :data:`PLUGIN_MODULES` that exists — ``servelab.cloud.targets`` is where
   servelab's own cloud targets register, so the cloud package plugs in without editing this
   file; a missing module is not an error;
3. installed entry points in the group ``servelab.targets`` (name: any; value: a module, or a
   ``module:callable`` that is called with no arguments) — for packages outside servelab;
4. explicit :func:`register_target` calls made by the program itself (tests, notebooks).

This module imports nothing heavy and nothing from the rest of ``servelab.bench`` at import
time, so the spec, the planner and the targets can all depend on it.
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from servelab.errors import ConfigError

if TYPE_CHECKING:
    from servelab.bench.target_spec import BenchTarget, TargetSpecBase

ENTRY_POINT_GROUP = "servelab.targets"
# Modules imported (if they exist) the first time a kind that is not built in is looked up.
PLUGIN_MODULES: tuple[str, ...] = ("servelab.cloud.targets",)

BUILTIN: dict[str, tuple[str, str]] = {
    "serverless": ("servelab.bench.spec:ServerlessTargetSpec", "servelab.bench.targets:ServerlessTarget"),
    "server": ("servelab.bench.spec:ServerTargetSpec", "servelab.bench.targets:ServerTarget"),
    "gpu-server": ("servelab.bench.spec:GpuServerTargetSpec", "servelab.bench.targets:GpuServerTarget"),
    "managed": ("servelab.bench.spec:ManagedTargetSpec", "servelab.bench.targets:ManagedTarget"),
    "http": ("servelab.bench.spec:HttpTargetSpec", "servelab.bench.targets:HttpBenchTarget"),
}


@dataclass
class _Entry:
    spec: type | str  # a class, or "module:attr" not imported yet
    target: type | str
    origin: str  # who registered it: "builtin", a module name, an entry point — for error messages


_REGISTRY: dict[str, _Entry] = {k: _Entry(s, t, "builtin") for k, (s, t) in BUILTIN.items()}
_discovered = False
_plugin_errors: dict[str, str] = {}  # plugin -> why it failed to load (shown with unknown kinds)
_lock = threading.RLock()


def register_target(kind: str, spec_cls: type[TargetSpecBase] | str, target_cls: type[BenchTarget] | str,
                    *, replace: bool = False) -> None:
    """Make ``kind`` a target an experiment may name.

    ``spec_cls`` validates the target's mapping (its ``kind`` field must be ``Literal[kind]``);
    ``target_cls`` serves the runs. Either may be a ``"module:attr"`` string, imported on first
    use. Registering a kind twice is an error unless ``replace=True`` (a test swapping a target).
    """
    if not isinstance(kind, str) or not kind or kind != kind.strip() or " " in kind:
        raise ConfigError(f"a target kind is a non-empty word like 'aws-lambda' (got {kind!r})")
    for what, obj in (("spec_cls", spec_cls), ("target_cls", target_cls)):
        if isinstance(obj, str) and obj.count(":") != 1:
            raise ConfigError(f"register_target({kind!r}): {what} {obj!r} must be a class or 'module:attr'")
    with _lock:
        old = _REGISTRY.get(kind)
        if old is not None and not replace and (old.spec, old.target) != (spec_cls, target_cls):
            raise ConfigError(f"target kind {kind!r} is already registered (by {old.origin}); pass "
                              "replace=True to replace it")
        entry = _Entry(spec_cls, target_cls, _caller_module())
        if not isinstance(spec_cls, str):
            _check_spec(kind, spec_cls)
        if not isinstance(target_cls, str):
            _check_target(kind, target_cls)
        _REGISTRY[kind] = entry


def unregister_target(kind: str) -> None:
    """Remove a registered kind (built-ins cannot be removed). For tests and notebooks."""
    if kind in BUILTIN:
        raise ConfigError(f"{kind!r} is a built-in target kind and cannot be unregistered")
    with _lock:
        _REGISTRY.pop(kind, None)


def target_kinds() -> tuple[str, ...]:
    """Every kind an experiment may name here: the built-ins first, then plugins as registered."""
    _discover()
    return tuple(_REGISTRY)


def spec_class(kind: str) -> type[TargetSpecBase]:
    """The spec class of ``kind``; ConfigError listing the allowed kinds when it is unknown."""
    entry = _entry(kind)
    if isinstance(entry.spec, str):
        cls = _import(entry.spec, kind)
        _check_spec(kind, cls)
        entry.spec = cls
    return entry.spec  # type: ignore[return-value]


def target_class(kind: str) -> type[BenchTarget]:
    """The target class of ``kind``; ConfigError listing the allowed kinds when it is unknown."""
    entry = _entry(kind)
    if isinstance(entry.target, str):
        cls = _import(entry.target, kind)
        _check_target(kind, cls)
        entry.target = cls
    return entry.target  # type: ignore[return-value]


def unknown_kind_message(kind: Any) -> str:
    """Why ``kind`` is not accepted: the allowed kinds, and any plugin that failed to load."""
    msg = f"unknown target kind {kind!r}; allowed kinds: {', '.join(target_kinds())}"
    if _plugin_errors:
        msg += " (target plugins that failed to load: " + "; ".join(
            f"{name}: {why}" for name, why in _plugin_errors.items()) + ")"
    return msg


# ------------------------------------------------------------------------------------ internals


def _entry(kind: str) -> _Entry:
    with _lock:
        if kind not in _REGISTRY:
            _discover()
        entry = _REGISTRY.get(kind)
    if entry is None:
        raise ConfigError(unknown_kind_message(kind))
    return entry


def _discover() -> None:
    """Import the plugin modules and entry points once; each registers its kinds as it loads."""
    global _discovered
    with _lock:
        if _discovered:
            return
        _discovered = True  # first: a plugin that looks up a kind while loading must not recurse
        for name in PLUGIN_MODULES:
            try:
                importlib.import_module(name)
            except ModuleNotFoundError as e:
                if e.name is None or not name.startswith(e.name):  # the plugin's own import failed
                    _plugin_errors[name] = f"{type(e).__name__}: {e}"
            except Exception as e:  # a broken plugin must not break the built-in kinds
                _plugin_errors[name] = f"{type(e).__name__}: {e}"
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                obj = ep.load()
                if callable(obj) and not isinstance(obj, type):
                    obj()
            except Exception as e:  # same: report it with the unknown kind
                _plugin_errors[f"entry point {ep.name} ({ep.value})"] = f"{type(e).__name__}: {e}"


def _import(ref: str, kind: str) -> Any:
    module, _, attr = ref.partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"target kind {kind!r}: cannot import {ref!r} ({type(e).__name__}: {e})") from None
    return obj


def _check_spec(kind: str, cls: Any) -> None:
    from servelab.bench.target_spec import TargetSpecBase

    if not (isinstance(cls, type) and issubclass(cls, TargetSpecBase)):
        raise ConfigError(f"target kind {kind!r}: the spec class must subclass "
                          f"servelab.bench.spec.TargetSpecBase (got {cls!r})")
    default = cls.model_fields["kind"].default
    if default != kind:
        raise ConfigError(f"target kind {kind!r}: {cls.__name__}.kind must be Literal[{kind!r}] with default "
                          f"{kind!r} (got default {default!r})")


def _check_target(kind: str, cls: Any) -> None:
    from servelab.bench.target_spec import BenchTarget

    if not (isinstance(cls, type) and issubclass(cls, BenchTarget)):
        raise ConfigError(f"target kind {kind!r}: the target class must subclass "
                          f"servelab.bench.targets.BenchTarget (got {cls!r})")


def _caller_module() -> str:
    import sys

    frame = sys._getframe(2)
    return str(frame.f_globals.get("__name__", "?"))
