"""The registry of server modules.

A module is a package `alai/server/<name>/` whose `__init__.py` defines `MODULE`:

    MODULE = Module(name="mc", summary="Mission Control tasks",
                    depends_on=("identity",), router=routes.router_factory, ...)

and may hold `migrations/NNNN_*.sql`. Adding a module is adding that folder: it is
found here, its migrations are applied in dependency order, and `ALAI_MODULES`
decides whether this process mounts its routes and runs its background work.
Migrations of every module are applied whatever `ALAI_MODULES` says, so that all
replicas share one schema.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from functools import cache
from graphlib import CycleError, TopologicalSorter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import APIRouter, FastAPI

    from alai.wire.ops import ModuleStatus

# Modules that every process serves, whatever ALAI_MODULES says: every replica needs
# its probes (ops) and must check bearer tokens (identity's authenticators).
ALWAYS_SERVED = frozenset({"ops", "identity"})


@dataclass(frozen=True)
class Module:
    name: str
    summary: str
    depends_on: tuple[str, ...] = ()
    # Builds the module's routes; called once per app.
    router: Callable[[], APIRouter] | None = None
    # Background work for as long as the app runs (listeners, pruning, heartbeats).
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None
    # The module's own view of its health, for /v1/status.
    status: Callable[[FastAPI], Awaitable[ModuleStatus]] | None = None
    tags: tuple[str, ...] = field(default_factory=tuple)


class UnknownModule(ValueError):
    pass


@cache
def all_modules() -> tuple[Module, ...]:
    """Every module of this build, dependencies first."""
    import alai.server as server_package

    found: dict[str, Module] = {}
    for info in pkgutil.iter_modules(server_package.__path__):
        if not info.ispkg:
            continue
        package = importlib.import_module(f"alai.server.{info.name}")
        module = getattr(package, "MODULE", None)
        if isinstance(module, Module):
            found[module.name] = module
    graph = {name: set(module.depends_on) for name, module in found.items()}
    for name, deps in graph.items():
        missing = deps - found.keys()
        if missing:
            raise UnknownModule(f"module {name} depends on missing module(s): {', '.join(sorted(missing))}")
    try:
        order = list(TopologicalSorter({name: sorted(deps) for name, deps in sorted(graph.items())}).static_order())
    except CycleError as error:
        raise UnknownModule(f"module dependencies form a cycle: {error.args[1]}") from error
    return tuple(found[name] for name in order)


def select(names: list[str] | None) -> list[Module]:
    """The modules a process serves: `names` (None = all) plus those always served."""
    available = {module.name: module for module in all_modules()}
    if names is None:
        return list(available.values())
    unknown = [name for name in names if name not in available]
    if unknown:
        raise UnknownModule(
            f"unknown module(s) in ALAI_MODULES: {', '.join(unknown)}; available: {', '.join(available)}"
        )
    wanted = set(names) | ALWAYS_SERVED
    return [module for module in available.values() if module.name in wanted]

