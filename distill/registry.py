"""Name registries for the config's open choices: `agent.format` (FORMATS) and `teacher.provider` (TEACHERS).

The config validates a name against its registry; the package that owns the choice fills it. Built-ins are
registered the way a third party registers its own: `register_format(name, factory)` (distill.formats) or
`register_teacher(name, factory)` (distill.teachers), where a factory is a callable `factory(config)` or a lazy
"module:attr" string that is imported only when the factory is first asked for. This module sits on the foundation
floor and imports nothing of distill: a registry names its home package and imports it (by name, once) the first
time it is read, so a config validated before anything else still sees the built-ins, and a name registered at run
time passes config validation.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__all__ = ["FORMATS", "TEACHERS", "Registry"]

Factory = Callable[..., Any]


class Registry:
    """Names -> factories (callables, or lazy "module:attr" strings), for one config key."""

    def __init__(self, key: str, *, home: str, register_with: str, also: tuple[str, ...] = ()) -> None:
        self.key, self.home, self.register_with, self.also = key, home, register_with, also
        self._factories: dict[str, Factory | str] = {}
        self._home_loaded = False

    def register(self, name: str, factory: Factory | str) -> None:
        """Make `<key>: <name>` build with `factory(config)` (a later registration of the same name wins)."""
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"a {self.key} name must be a non-empty string, got {name!r}")
        if isinstance(factory, str) and ":" not in factory:
            raise ValueError(f"a lazy factory is written 'module:attr', got {factory!r}")
        if not (isinstance(factory, str) or callable(factory)):
            raise TypeError(f"the factory of {self.key} {name!r} must be callable or 'module:attr'")
        self._factories[name] = factory

    def unregister(self, name: str) -> None:
        """Forget a registration (tests; a plugin unloading itself)."""
        self._factories.pop(name, None)

    def _load_home(self) -> None:
        if not self._home_loaded:
            self._home_loaded = True
            importlib.import_module(self.home)  # its __init__ registers the built-ins

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        self._load_home()
        return sorted(self._factories)

    def __contains__(self, name: object) -> bool:
        self._load_home()
        return name in self._factories

    def check(self, name: str) -> str:
        """`name` when it is registered (or one of `also`); else ValueError naming the known ones and the fix."""
        if name in self.also or name in self:
            return name
        known = ", ".join([*self.also, *self.names()])
        raise ValueError(f"{name!r} is not a registered {self.key} (known: {known}); {self.register_with} adds one")

    def factory(self, name: str) -> Factory:
        """The factory registered for `name` (a lazy one is imported now); KeyError when there is none."""
        self._load_home()
        found = self._factories.get(name)
        if found is None:
            raise KeyError(f"{name!r} is not a registered {self.key} (known: {', '.join(self.names())})")
        if isinstance(found, str):
            module, _, attr = found.partition(":")
            resolved: Any = importlib.import_module(module)
            for part in attr.split("."):
                resolved = getattr(resolved, part)
            self._factories[name] = found = resolved
        return found


FORMATS = Registry("agent.format", home="distill.formats", register_with="distill.formats.register_format")
TEACHERS = Registry(
    "teacher.provider", home="distill.teachers", register_with="distill.teachers.register_teacher", also=("auto",)
)
