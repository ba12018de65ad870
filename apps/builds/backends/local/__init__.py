"""The local builder: a git checkout and a uv virtualenv on this machine
(``BINDERY_BACKEND=local``, ``LocalBuilder``).

One idea a module, each module's docstring saying what it holds:

- ``builder``: ``LocalBuilder``: fetch, plan, key, reuse or build under the key's lock,
  publish the checkout (the order of a build).
- ``interpreters``: the Pythons a build can run on and each one's base set.
- ``environment``: making one environment: venv, install, bytecode, seal, ready record.
- ``postbuild``: running postBuild, and why it failed.
- ``overlay``: postBuild's output, recorded once and replayed onto later commits.
- ``steps``: how a build runs its commands: on the host, or in the sandbox as which uid.
- ``network``: the network namespace of a build's sandboxed commands.
- ``runner``: one build's clock, log and subprocesses; reading a command's last words.
- ``uv_tool``: how uv is called: its binary, environment, index flags, failures.

The names here are those the rest of the portal imports; the modules are the source.
"""

from __future__ import annotations

from apps.builds.backends.local.builder import LocalBuilder
from apps.builds.backends.local.environment import (
    BUILDER_VERSION,
    DROPPED_PACKAGES,
    LAB_OVERRIDES,
)
from apps.builds.backends.local.interpreters import (
    BASE_REQUIREMENTS_FILE,
    MIN_PYTHON,
    Interpreter,
    base_requirements_file,
    choose_interpreter,
    default_interpreter,
    find_interpreter,
    read_base_requirements,
    usable_interpreters,
)
from apps.builds.backends.local.network import loopback_services, network_plan
from apps.builds.backends.local.runner import clean_line, meaningful_line
from apps.builds.backends.local.steps import portal_paths_under, sandbox_mode, uv_binds
from apps.builds.backends.local.uv_tool import uv_binary

__all__ = [
    "BASE_REQUIREMENTS_FILE",
    "BUILDER_VERSION",
    "DROPPED_PACKAGES",
    "LAB_OVERRIDES",
    "MIN_PYTHON",
    "Interpreter",
    "LocalBuilder",
    "base_requirements_file",
    "choose_interpreter",
    "clean_line",
    "default_interpreter",
    "find_interpreter",
    "loopback_services",
    "meaningful_line",
    "network_plan",
    "portal_paths_under",
    "read_base_requirements",
    "sandbox_mode",
    "usable_interpreters",
    "uv_binary",
    "uv_binds",
]
