"""Start ``jupyterhub-singleuser`` without importing the hub's own server half.

Run by the session's environment's Python (any of them, 3.6 to 3.13: so no
``from __future__ import annotations`` here, unlike the rest of the code), as
``<env>/bin/python <this file> [args]``: the local spawner does so instead of running
``<env>/bin/jupyterhub-singleuser``, whose entry point is the same ``main``.

Why: ``jupyterhub.singleuser`` imports ``jupyterhub.log``, which imports the hub's request
handlers (for one ``isinstance`` check) and its Prometheus metrics, and through them the
hub's ORM, SQLAlchemy and Alembic; ``jupyterhub.scopes`` and ``.roles`` import the ORM and
SQLAlchemy too, for lookups that only run with a database session. None of it runs in a
single-user server, and it is most of what the server's start costs beyond
``jupyter-server``'s own (0.6-0.8 s of CPU on a 2-core machine, of ~1.1 s).

How: while ``jupyterhub.singleuser`` imports, stand-ins for those modules sit in
``sys.modules``, holding only the names the single-user side takes from them at import
time; they are taken out again as soon as it has imported, so that anything imported later
(a server extension that uses SQLAlchemy, say) gets the real modules. A stand-in answers
any other name with ``AttributeError``, so that a JupyterHub release that takes something
else from them fails the lean import, which then falls back to the plain import: a release
this was not written against starts as it always did, only slower.
"""

import importlib
import importlib.machinery
import os
import sys
import types
from typing import Any, Callable, Dict, Tuple

# (module, names the single-user side takes from it at import time)
STAND_INS: Tuple[Tuple[str, Dict[str, None]], ...] = (
    ("sqlalchemy", {"func": None}),  # roles: `from sqlalchemy import func`; scopes: `sa`
    ("sqlalchemy.exc", {"SQLAlchemyError": None}),  # utils: catch_db_error (the hub's)
    ("jupyterhub.orm", {}),  # scopes, roles: used only with a database session
    ("jupyterhub.handlers", {}),
    ("jupyterhub.handlers.pages", {"HealthCheckHandler": None}),  # log: isinstance
    ("jupyterhub.metrics", {"prometheus_log_method": None}),  # log: the hub's metrics
)


class _NotLoaded(Exception):
    """The stand-in for SQLAlchemyError: never raised in a single-user server."""


class _HubHealthCheckHandler:
    """The stand-in for the hub's health-check handler: a single-user server has none."""


def _no_hub_metrics(handler: Any) -> None:
    """The stand-in for the hub's per-request metrics: a single-user server keeps none."""


_VALUES: Dict[str, Any] = {
    "SQLAlchemyError": _NotLoaded,
    "HealthCheckHandler": _HubHealthCheckHandler,
    "prometheus_log_method": _no_hub_metrics,
}


def _stand_in(name: str, names: Dict[str, None]) -> types.ModuleType:
    module = types.ModuleType(name, "Bindery's stand-in, only while jupyterhub imports")
    module.__path__ = []  # a package, so that its submodules' stand-ins can be found
    for key in names:
        setattr(module, key, _VALUES.get(key))

    def __getattr__(attr: str) -> Any:
        raise AttributeError(
            f"{name}.{attr} is not loaded in a single-user server (Bindery's lean start)"
        )

    module.__getattr__ = __getattr__  # type: ignore[method-assign]
    return module


def lean_import(
    stand_ins: Tuple[Tuple[str, Dict[str, None]], ...] = STAND_INS,
) -> Tuple[Callable[[], Any], bool]:
    """``jupyterhub.singleuser.main``, and whether it was imported with the stand-ins."""
    if any(name in sys.modules for name, _ in stand_ins) or any(
        name == "jupyterhub" or name.startswith("jupyterhub.") for name in sys.modules
    ):
        from jupyterhub.singleuser import main

        return main, False
    placed = {name: _stand_in(name, names) for name, names in stand_ins}
    sys.modules.update(placed)
    try:
        from jupyterhub.singleuser import main

        lean = True
    except Exception:  # a release that takes more from them: the plain import, below
        lean = False
    finally:
        for name, module in placed.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]
    if lean:
        return main, True
    for name in [m for m in sys.modules if m == "jupyterhub" or m.startswith("jupyterhub.")]:
        del sys.modules[name]
    from jupyterhub.singleuser import main

    return main, False


def _no_yarn_config(logger: Any) -> Dict[str, Dict[str, Any]]:
    """``jupyterlab.commands._yarn_config``'s answer where it finds no yarn configuration."""
    return {"yarn config": {}, "npm config": {}}


class LabAppWithoutYarn:
    """Imports ``jupyterlab.labapp`` without the one ``node yarn.js config --json`` run that
    its import makes (about 0.5 s and 0.65 s of CPU of every server start where ``node`` is
    on the PATH).

    ``labapp`` computes ``app_version = get_app_version()`` as it is imported; that builds a
    throwaway ``_AppHandler``, whose options look up the npm registry from yarn's
    configuration, which runs node; only the version is kept. While ``labapp`` executes,
    ``jupyterlab.commands._yarn_config`` answers as where no configuration is found, so
    that handler gets yarn's default registry, which nothing reads; the real function is
    back as soon as ``labapp`` has run, for the extension manager and builds, which use
    the registry. A meta path finder, found once: it steps aside after that import.
    """

    NAME = "jupyterlab.labapp"

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != self.NAME:
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        run_module = loader.exec_module

        def exec_module(module: types.ModuleType) -> None:
            commands = importlib.import_module("jupyterlab.commands")
            real = commands.__dict__.get("_yarn_config")
            if real is not None:
                commands._yarn_config = _no_yarn_config  # type: ignore[attr-defined]
            try:
                run_module(module)
            finally:
                if real is not None:
                    commands._yarn_config = real  # type: ignore[attr-defined]

        loader.exec_module = exec_module
        return spec


def without_yarn_at_import() -> None:
    """Have ``jupyterlab.labapp`` imported without its yarn run (``LabAppWithoutYarn``),
    unless it is imported already."""
    if LabAppWithoutYarn.NAME not in sys.modules:
        sys.meta_path.insert(0, LabAppWithoutYarn())


def run() -> None:
    bin_dir = os.path.dirname(sys.executable)
    # as the entry-point script has it: its own directory first, not this file's
    sys.path[0] = bin_dir
    sys.argv[0] = os.path.join(bin_dir, "jupyterhub-singleuser")
    main, _ = lean_import()
    without_yarn_at_import()
    sys.exit(main())


if __name__ == "__main__":
    run()
