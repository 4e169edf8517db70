"""A pluggy bridge: hook specifications built from events.yaml, and hook implementations that emit.

Each event's ``hookspec`` names a hook, and its ``hook`` entry names the
hook's arguments and which of them become the payload's ``user`` and
``data``. An application registers both on its plugin manager::

    pm = pluggy.PluginManager("unified_ecommerce")
    pm.add_hookspecs(hook_specifications(engine.config))
    pm.register(HookEmitter(engine))
    pm.hook.post_sale(user=user, order=order_data)  # returns [event_id]
"""

from __future__ import annotations

import keyword
import types
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import pluggy

from .config import Config, EventType, HookBinding
from .errors import PayloadError

if TYPE_CHECKING:
    from .engine import Engine

#: The project name of Unified Ecommerce's plugin manager and hook markers.
DEFAULT_PROJECT_NAME = "unified_ecommerce"


def hook_specifications(
    config: Config, project_name: str = DEFAULT_PROJECT_NAME
) -> types.ModuleType:
    """Build a module holding one hook specification per event, for ``add_hookspecs``.

    Each specification is named by the event's ``hookspec`` and takes the
    arguments its ``hook`` entry lists, as keyword arguments.
    """
    marker = pluggy.HookspecMarker(project_name)
    module = types.ModuleType("ue_flow_hookspecs", "Hook specifications of the configured events.")
    for event in config.events.values():
        function = _function(event.hookspec, event.hook.arguments, _no_result)
        function.__doc__ = event.description
        setattr(module, event.hookspec, marker(function))
    return module


def _no_result(arguments: Mapping[str, Any]) -> None:
    del arguments


class HookEmitter:
    """A plugin with one hook implementation per event, each of which emits its event.

    The implementation validates the payload at once, so an invalid one
    raises PayloadError from the hook call, and returns the event id.
    """

    def __init__(self, engine: Engine, project_name: str = DEFAULT_PROJECT_NAME) -> None:
        self.engine = engine
        marker = pluggy.HookimplMarker(project_name)
        for event in engine.config.events.values():
            function = _function(event.hookspec, event.hook.arguments, self._emitter(event))
            setattr(self, event.hookspec, marker(function))

    def _emitter(self, event: EventType) -> Callable[[Mapping[str, Any]], str]:
        def emit(arguments: Mapping[str, Any]) -> str:
            user, data = payload_of(event, arguments)
            return self.engine.emit(event.name, user=user, data=data)

        return emit


def payload_of(event: EventType, arguments: Mapping[str, Any]) -> tuple[Any, Any]:
    """Return the ``user`` and ``data`` that the event's hook binding picks from ``arguments``.

    Raises PayloadError when a dotted path names a key that is missing.
    """
    binding: HookBinding = event.hook
    return (
        _pick(event, arguments, binding.user),
        _pick(event, arguments, binding.data),
    )


def _pick(event: EventType, arguments: Mapping[str, Any], path: str) -> Any:
    name, *keys = path.split(".")
    value = arguments[name]
    for depth, key in enumerate(keys, start=1):
        if not isinstance(value, Mapping) or key not in value:
            where = ".".join([name, *keys[:depth]])
            rule = f"the hook argument has no key {key!r}, but events.yaml reads {path}"
            raise PayloadError(event.name, where, rule)
        value = value[key]
    return value


def _function(
    name: str, arguments: tuple[str, ...], call: Callable[[Mapping[str, Any]], Any]
) -> Callable[..., Any]:
    # pluggy (1.7, in its varnames helper) reads a hook's argument names from
    # the function's code object, so the function is compiled with those
    # names. Only identifiers reach the source: the config schema requires
    # them, and this check repeats it.
    for identifier in (name, *arguments):
        if not identifier.isidentifier() or keyword.iskeyword(identifier):
            raise ValueError(f"{identifier!r} is not a valid Python identifier for a hook")

    collected = ", ".join(f"{argument!r}: {argument}" for argument in arguments)
    source = f"def {name}({', '.join(arguments)}):\n    return _call({{{collected}}})\n"
    namespace: dict[str, Any] = {"_call": call}
    exec(compile(source, f"<ue-flow hook {name}>", "exec"), namespace)
    function: Callable[..., Any] = namespace[name]
    return function
