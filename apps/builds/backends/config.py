"""Read a checkout's repo2docker configuration into a BuildPlan for the local builder.

``read_plan(checkout)`` is a pure function of a directory: it reads files, runs nothing and
touches no network, so every rule here is testable without uv.

repo2docker's rules, as its buildpacks and docs ("Configuration files") state them:

- ``binder/`` or ``.binder/`` holds the configuration when it exists, and then every
  configuration file in the root is ignored (a root ``setup.py`` too). Both at once is an
  error (BINDER_DIR_CONFLICT).
- Buildpacks are tried in this order; the first that matches wins: Dockerfile, Julia
  (``Project.toml``/``JuliaProject.toml``, then ``REQUIRE``), Nix (``default.nix``),
  R (``runtime.txt`` ``r-...``, ``install.R``, a root ``DESCRIPTION``), conda
  (``environment.yml``), Pipfile (``Pipfile.lock`` over ``Pipfile``, default and dev
  packages), then Python (``requirements.txt``, ``runtime.txt`` ``python-X.Y``, a root
  ``setup.py``). ``apt.txt``, ``postBuild`` and ``start`` apply to every buildpack.
- ``runtime.txt`` is ignored with ``environment.yml`` (which sets Python with
  ``python=X.Y``) and with a Pipfile (``[requires] python_version``).

What this builder does differently, on purpose:

- Docker, Julia, Nix, R and ``apt.txt`` need system packages or other languages: refused
  with NEEDS_KUBERNETES naming the file.
- Python 2 is refused (PYTHON2_UNSUPPORTED).
- ``environment.yml``: its ``pip:`` section is installed, and each conda dependency is
  translated to a PEP 508 requirement of the same name (``numpy=1.26`` → ``numpy==1.26.*``)
  in ``conda_packages``. Whether such a package "exists on PyPI under the same name" is
  decided by the builder, not here: it asks the resolver about each one alone
  (``uv pip compile --no-deps``, against the configured index, or offline against the uv
  cache) and skips the failures with a warning naming every one. A resolver check is
  exact for the index in use; a curated conda→PyPI list would go stale and still be wrong
  for names like ``graphviz`` that differ in meaning between the two.
- A root ``pyproject.toml`` with a ``[project]`` or ``[build-system]`` table is installed
  like ``setup.py`` (a tool-settings-only ``pyproject.toml`` is not a package).
- The repository is installed as a regular package, never editable (``-e .`` too): an
  editable install would point into the build's checkout, while sessions run in a copy.
- Every path a configuration file names (``-r``, ``-c``, local packages, symlinked config
  files) must stay inside the checkout (CONFIG_OUTSIDE_REPO): these files are hostile.

Requirement lines in the plan are pip requirement-file lines. Local paths in them are
rewritten relative to the checkout root as ``./<path>``; the builder makes them absolute.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from portal.errors import BackendError

MAX_CONFIG_BYTES = 1024 * 1024

# File name → what it asks for. Checked in repo2docker's buildpack order.
_KUBERNETES_ONLY: tuple[tuple[str, str], ...] = (
    ("Dockerfile", "a Docker image build"),
    ("Project.toml", "a Julia environment"),
    ("JuliaProject.toml", "a Julia environment"),
    ("REQUIRE", "a Julia environment"),
    ("default.nix", "a Nix environment"),
    ("install.R", "an R environment"),
)

# pip options we pass through unchanged (values are URLs or flags, never local files).
_PASSTHROUGH_OPTIONS = {
    "-i": True,
    "--index-url": True,
    "--extra-index-url": True,
    "--pre": False,
    "--prefer-binary": False,
    "--only-binary": True,
    "--no-binary": True,
}
_INCLUDE_OPTIONS = {"-r": "-r", "--requirement": "-r", "-c": "-c", "--constraint": "-c"}
_EDITABLE_OPTIONS = {"-e", "--editable"}
_VCS_PREFIXES = ("git+", "hg+", "svn+", "bzr+")
_URL_PREFIXES = ("http://", "https://", *_VCS_PREFIXES)
_CONDA_PYTHON = re.compile(r"^python\s*=+\s*([\d.]*)")
_VERSION = re.compile(r"^\d+(\.\d+)*$")
_EGG = re.compile(r"[#&]egg=([A-Za-z0-9][A-Za-z0-9._-]*)")


@dataclass(frozen=True)
class BuildPlan:
    """What to build for one checkout. Paths are relative to the checkout root."""

    config_dir: str  # "", "binder" or ".binder"
    config_files: tuple[str, ...]  # every configuration file that shapes the build
    python_version: str  # "X.Y" asked for, "" for the default interpreter
    python_source: str  # the file that asked for it ("runtime.txt", ...), "" if none
    requirements: tuple[str, ...]  # pip requirement-file lines, local paths as ./<path>
    conda_packages: tuple[str, ...]  # environment.yml dependencies to try on the index
    requirement_names: frozenset[str]  # canonical names the repository asks for itself
    installs_repository: bool  # the repository's own files are installed into the env
    dependency_files: tuple[str, ...]  # files whose contents shape the environment
    postbuild: str = ""
    start: str = ""
    warnings: tuple[str, ...] = ()


@dataclass
class _Reader:
    root: Path
    config_dir: str
    warnings: list[str] = field(default_factory=list)
    dependency_files: list[str] = field(default_factory=list)
    names: set[str] = field(default_factory=set)
    installs_repository: bool = False

    def rel(self, name: str) -> str:
        return f"{self.config_dir}/{name}" if self.config_dir else name

    def has(self, name: str) -> bool:
        return os.path.lexists(self.root / self.rel(name))

    def text(self, rel: str) -> str:
        """The text of a file inside the checkout; refuses anything that leaves it."""
        path = _inside(self.root, rel, what=rel)
        if not path.is_file():
            raise BackendError(f"{rel} is not a regular file.", code="CONFIG_INVALID")
        data = path.read_bytes()
        if len(data) > MAX_CONFIG_BYTES:
            raise BackendError(
                f"{rel} is larger than {MAX_CONFIG_BYTES // 1024} KiB; configuration files "
                "must be small.",
                code="CONFIG_INVALID",
            )
        encoding = "utf-16" if data.startswith((b"\xff\xfe", b"\xfe\xff")) else "utf-8-sig"
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            raise BackendError(f"{rel} is not UTF-8 text.", code="CONFIG_INVALID") from None

    def depend(self, rel: str) -> None:
        if rel not in self.dependency_files:
            self.dependency_files.append(rel)

    # --- pip requirement lines ----------------------------------------------------------

    def requirement_file(self, rel: str, seen: tuple[str, ...] = ()) -> list[str]:
        """Lines of a requirements file with ``-r`` includes inlined and paths rewritten."""
        if rel in seen:
            raise BackendError(f"{rel} includes itself through -r.", code="CONFIG_INVALID")
        self.depend(rel)
        base = os.path.dirname(rel)
        return self.requirement_lines(_logical_lines(self.text(rel)), base, rel, (*seen, rel))

    def requirement_lines(
        self, lines: Iterable[str], base: str, source: str, seen: tuple[str, ...] = ()
    ) -> list[str]:
        """Normalise pip requirement lines found in ``source`` (a file in directory ``base``).

        Includes are relative to ``base`` (pip's rule); local package paths are relative to
        the checkout root, where pip runs.
        """
        out: list[str] = []
        for line in lines:
            option, _, value = _split_option(line)
            if option in _INCLUDE_OPTIONS:
                target = _join(base, value)
                _inside(self.root, target, what=f"{source} ({option} {value})")
                if _INCLUDE_OPTIONS[option] == "-r":
                    out.extend(self.requirement_file(target, seen))
                else:
                    self.depend(target)
                    out.append(f"-c ./{target}")
            elif option in _EDITABLE_OPTIONS:
                if value.startswith(_URL_PREFIXES):
                    self.name_of(value)
                    out.append(value)
                else:
                    out.append(self.local_path(value, source))
                    self.warnings.append(
                        f"{source}: '{line}' is installed as a regular package, not in "
                        "editable mode (sessions run in a copy of the repository)."
                    )
            elif option in ("-f", "--find-links"):
                if value.startswith(("http://", "https://")):
                    out.append(f"--find-links {value}")
                else:
                    out.append(f"--find-links {self.local_path(value, source)}")
            elif option in _PASSTHROUGH_OPTIONS:
                out.append(f"{option} {value}".strip() if _PASSTHROUGH_OPTIONS[option] else option)
            elif option:
                self.warnings.append(f"{source}: the pip option '{option}' is ignored.")
            elif " @ file:" in line:
                out.append(self.local_path(line.split(" @ ", 1)[1].strip(), source))
            elif _is_local(line):
                out.append(self.local_path(line, source))
            else:
                self.name_of(line)
                out.append(line)
        return out

    def local_path(self, value: str, source: str) -> str:
        path = value.removeprefix("file://").removeprefix("file:")
        if os.path.isabs(path):
            raise BackendError(
                f"{source} installs '{value}', a path outside the repository.",
                code="CONFIG_OUTSIDE_REPO",
            )
        path = path.split("#", 1)[0].split("[", 1)[0].strip()
        target = _join("", path)
        _inside(self.root, target, what=f"{source} ({value})")
        self.installs_repository = True
        return "./" if target in ("", ".") else f"./{target}"

    def name_of(self, line: str) -> None:
        egg = _EGG.search(line)
        if egg:
            self.names.add(canonicalize_name(egg.group(1)))
            return
        spec = re.split(r"\s--?[a-z]", line, maxsplit=1)[0].strip()
        with contextlib.suppress(InvalidRequirement):  # uv reports malformed lines itself
            self.names.add(canonicalize_name(Requirement(spec).name))


def read_plan(checkout: Path) -> BuildPlan:
    """The BuildPlan for a checkout.

    Raises BackendError: BINDER_DIR_CONFLICT, NEEDS_KUBERNETES, PYTHON2_UNSUPPORTED,
    RUNTIME_INVALID, CONFIG_INVALID, CONFIG_OUTSIDE_REPO (all permanent).
    """
    root = checkout.resolve()
    reader = _Reader(root=root, config_dir=_config_dir(root))

    for name, what in _KUBERNETES_ONLY:
        if reader.has(name):
            raise _needs_kubernetes(reader.rel(name), what)
    runtime_text = ""
    if reader.has("runtime.txt"):
        runtime_text = reader.text(reader.rel("runtime.txt")).strip()
    if runtime_text.startswith("r-"):
        raise _needs_kubernetes(reader.rel("runtime.txt"), "an R environment")
    if not reader.config_dir and reader.has("DESCRIPTION"):
        raise _needs_kubernetes("DESCRIPTION", "an R package install")
    if reader.has("apt.txt"):
        raise _needs_kubernetes(reader.rel("apt.txt"), "system packages installed with apt")

    config_files: list[str] = []
    conda: list[str] = []
    python_version, python_source = "", ""
    if reader.has("environment.yml"):
        rel = reader.rel("environment.yml")
        config_files.append(rel)
        lines, conda, python_version = _environment_yml(reader, rel)
        python_source = rel if python_version else ""
        _ignored(reader, rel, ["runtime.txt", "requirements.txt", "Pipfile", "Pipfile.lock"])
    elif reader.has("Pipfile.lock") or reader.has("Pipfile"):
        lines, python_version, python_source = _pipfile(reader, config_files)
        _ignored(reader, config_files[0], ["runtime.txt", "requirements.txt"])
    else:
        lines = []
        if reader.has("runtime.txt"):
            config_files.append(reader.rel("runtime.txt"))
            reader.depend(reader.rel("runtime.txt"))
            python_version = _runtime_python(reader.rel("runtime.txt"), runtime_text)
            python_source = reader.rel("runtime.txt")
        if reader.has("requirements.txt"):
            config_files.append(reader.rel("requirements.txt"))
            lines = reader.requirement_file(reader.rel("requirements.txt"))
        install_root = False
        if not reader.config_dir:
            for name in ("setup.py", "pyproject.toml"):
                if reader.has(name) and (name == "setup.py" or _is_package(reader, name)):
                    config_files.append(name)
                    reader.depend(name)
                    install_root = True
        if install_root:
            reader.installs_repository = True
            if "./" not in lines:
                lines.append("./")

    if python_version.split(".")[0] == "2":
        raise BackendError(
            f"{python_source} asks for Python {python_version}. Python 2 is not supported: "
            "ask for Python 3 (for example python-3.11 in runtime.txt).",
            code="PYTHON2_UNSUPPORTED",
        )

    postbuild = reader.rel("postBuild") if reader.has("postBuild") else ""
    start = reader.rel("start") if reader.has("start") else ""
    for script in (postbuild, start):
        if script:
            _inside(root, script, what=script)
            config_files.append(script)
    if postbuild:
        reader.depend(postbuild)

    return BuildPlan(
        config_dir=reader.config_dir,
        config_files=tuple(config_files),
        python_version=python_version,
        python_source=python_source,
        requirements=tuple(lines),
        conda_packages=tuple(conda),
        requirement_names=frozenset(reader.names),
        installs_repository=reader.installs_repository,
        dependency_files=tuple(reader.dependency_files),
        postbuild=postbuild,
        start=start,
        warnings=tuple(reader.warnings),
    )


# --- pieces -------------------------------------------------------------------------------


def _inside(root: Path, rel: str, *, what: str) -> Path:
    """``root / rel`` if it (after symlinks) stays inside ``root``."""
    path = root / rel
    resolved = path.resolve()
    if resolved != root and not resolved.is_relative_to(root):
        raise BackendError(
            f"{what} points outside the repository, which is not allowed.",
            code="CONFIG_OUTSIDE_REPO",
        )
    return path


def _join(base: str, value: str) -> str:
    return os.path.normpath(os.path.join(base, value)) if value else base


def _config_dir(root: Path) -> str:
    found = [name for name in ("binder", ".binder") if (root / name).is_dir()]
    if len(found) == 2:
        raise BackendError(
            "The repository has both a binder/ and a .binder/ directory; keep only one.",
            code="BINDER_DIR_CONFLICT",
        )
    if found:
        _inside(root, found[0], what=f"{found[0]}/")
        return found[0]
    return ""


def _needs_kubernetes(rel: str, what: str) -> BackendError:
    return BackendError(
        f"{rel} asks for {what}, which needs the Kubernetes backend. This portal builds on "
        "this machine with Python packages only (requirements.txt, environment.yml's "
        "pip-installable part, Pipfile, setup.py, pyproject.toml, postBuild).",
        code="NEEDS_KUBERNETES",
    )


def _runtime_python(rel: str, text: str) -> str:
    """The "X.Y" of runtime.txt's ``python-X.Y[.Z]`` ("" for plain ``python-3``)."""
    version = text.removeprefix("python-")
    if text.startswith("python-") and _VERSION.match(version):
        parts = version.split(".")
        if len(parts) == 1:
            return "2.7" if parts[0] == "2" else ""
        return ".".join(parts[:2])
    raise BackendError(
        f"{rel} says '{text[:40]}'; it should name a Python version such as python-3.11.",
        code="RUNTIME_INVALID",
    )


def _ignored(reader: _Reader, used: str, names: list[str]) -> None:
    present = [reader.rel(name) for name in names if reader.has(name)]
    present = [rel for rel in present if rel != used]
    if present:
        reader.warnings.append(
            f"{', '.join(present)} {'is' if len(present) == 1 else 'are'} ignored because "
            f"{used} is used, as repo2docker does."
        )


def _is_package(reader: _Reader, rel: str) -> bool:
    try:
        data = tomllib.loads(reader.text(rel))
    except tomllib.TOMLDecodeError as exc:
        raise BackendError(f"{rel} is not valid TOML: {exc}", code="CONFIG_INVALID") from None
    return "project" in data or "build-system" in data


def _logical_lines(text: str) -> list[str]:
    """Requirement-file lines without comments, blank lines and backslash continuations."""
    out: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", raw).rstrip()
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        line = (pending + line.strip()).strip()
        pending = ""
        if line:
            out.append(line)
    if pending.strip():
        out.append(pending.strip())
    return out


def _split_option(line: str) -> tuple[str, str, str]:
    """("-r", "", "file") for option lines, ("", "", "") for requirement lines."""
    if not line.startswith("-"):
        return ("", "", "")
    match = re.match(r"^(--?[A-Za-z-]+)(?:[=\s]\s*(.*))?$", line)
    if not match:
        return (line, "", "")
    return (match.group(1), "", (match.group(2) or "").strip())


def _is_local(line: str) -> bool:
    """pip's rule: a path starts with "." or contains a separator (URLs aside)."""
    if line.startswith(_URL_PREFIXES) or " @ " in line:
        return False
    first = line.split(";", 1)[0].split()[0]
    return first.startswith((".", "/", "file:")) or "/" in first


# --- environment.yml ----------------------------------------------------------------------


def _environment_yml(reader: _Reader, rel: str) -> tuple[list[str], list[str], str]:
    reader.depend(rel)
    try:
        data = yaml.safe_load(reader.text(rel))
    except yaml.YAMLError as exc:
        raise BackendError(f"{rel} is not valid YAML: {exc}", code="CONFIG_INVALID") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise BackendError(f"{rel} should contain a mapping.", code="CONFIG_INVALID")
    dependencies = data.get("dependencies") or []
    if not isinstance(dependencies, list):
        raise BackendError(f"{rel}: 'dependencies' should be a list.", code="CONFIG_INVALID")
    lines: list[str] = []
    conda: list[str] = []
    python_version = ""
    skipped: list[str] = []
    for dep in dependencies:
        if isinstance(dep, dict) and "pip" in dep:
            pip = dep["pip"] or []
            if not isinstance(pip, list) or not all(isinstance(p, str) for p in pip):
                raise BackendError(f"{rel}: 'pip' should be a list.", code="CONFIG_INVALID")
            text_lines = _logical_lines("\n".join(pip))
            lines.extend(reader.requirement_lines(text_lines, os.path.dirname(rel), rel))
            continue
        if not isinstance(dep, str):
            raise BackendError(f"{rel}: unexpected dependency {dep!r}.", code="CONFIG_INVALID")
        spec = dep.strip().split("::")[-1]
        match = _CONDA_PYTHON.match(spec)
        if match or spec == "python":
            version = match.group(1) if match else ""
            parts = [p for p in version.split(".") if p]
            if len(parts) >= 2:
                python_version = ".".join(parts[:2])
            elif parts == ["2"]:
                python_version = "2.7"
            continue
        if canonicalize_name(re.split(r"[\s=<>!~\[]", spec, maxsplit=1)[0]) == "pip":
            continue  # the base packages bring pip
        requirement = conda_to_requirement(spec)
        if requirement is None:
            skipped.append(dep)
        else:
            conda.append(requirement)
            reader.names.add(canonicalize_name(Requirement(requirement).name))
    if skipped:
        reader.warnings.append(
            f"{rel}: skipped conda packages that have no PyPI form: {', '.join(skipped)}."
        )
    return lines, conda, python_version


def conda_to_requirement(spec: str) -> str | None:
    """A conda match spec as a PEP 508 requirement of the same name, or None.

    ``numpy`` → ``numpy``; ``numpy=1.26`` (conda: 1.26.*) → ``numpy==1.26.*``;
    ``numpy==1.26.4``, ``numpy>=1.2,<2`` unchanged; ``numpy 1.26.4 py311_0`` →
    ``numpy==1.26.4``. Build strings and channels are dropped.
    """
    spec = spec.strip().split("::")[-1]
    match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*)$", spec)
    if not match:
        return None
    name, rest = match.group(1), match.group(2).strip()
    version = ""
    if rest:
        if rest.startswith("=") and not rest.startswith("=="):
            value = rest[1:].split("=", 1)[0].strip()  # name=1.2=build
            version = f"=={value.rstrip('.*')}.*" if value else ""
        elif rest[0] in "<>=!~":
            version = rest.split()[0]
        else:
            value = rest.split()[0]  # "name 1.2.3 build"
            version = f"=={value}" if not value.endswith("*") else f"=={value.rstrip('.*')}.*"
    for candidate in (f"{name}{version}", name):  # an untranslatable version: any version
        try:
            return str(Requirement(candidate))
        except InvalidRequirement:
            continue
    return None


# --- Pipfile ------------------------------------------------------------------------------


def _pipfile(reader: _Reader, config_files: list[str]) -> tuple[list[str], str, str]:
    lock_rel, pipfile_rel = reader.rel("Pipfile.lock"), reader.rel("Pipfile")
    base = reader.config_dir
    version, source = "", ""
    entries: list[str] = []
    requires: list[tuple[str, dict[str, Any]]] = []
    if reader.has("Pipfile.lock"):
        config_files.append(lock_rel)
        reader.depend(lock_rel)
        try:
            lock = json.loads(reader.text(lock_rel))
        except json.JSONDecodeError as exc:
            raise BackendError(
                f"{lock_rel} is not valid JSON: {exc}", code="CONFIG_INVALID"
            ) from None
        if not isinstance(lock, dict):
            raise BackendError(f"{lock_rel} should contain an object.", code="CONFIG_INVALID")
        requires.append((lock_rel, (lock.get("_meta") or {}).get("requires") or {}))
        for section in ("default", "develop"):
            for name, entry in (lock.get(section) or {}).items():
                entries.append(_pipfile_line(reader, lock_rel, base, name, entry))
        if reader.has("Pipfile"):
            requires.append((pipfile_rel, _pipfile_toml(reader, pipfile_rel).get("requires", {})))
    else:
        config_files.append(pipfile_rel)
        reader.depend(pipfile_rel)
        data = _pipfile_toml(reader, pipfile_rel)
        requires.append((pipfile_rel, data.get("requires") or {}))
        for section in ("packages", "dev-packages"):
            for name, entry in (data.get(section) or {}).items():
                entries.append(_pipfile_line(reader, pipfile_rel, base, name, entry))
    for rel, req in requires:
        for key in ("python_full_version", "python_version"):
            value = str(req.get(key) or "")
            match = re.match(r"\d+(\.\d+)*", value)
            if match:
                parts = match.group().split(".")
                major_only = "2.7" if parts == ["2"] else ""
                version = ".".join(parts[:2]) if len(parts) > 1 else major_only
                source = rel
                break
        if source:
            break
    return [line for line in entries if line], version, source


def _pipfile_toml(reader: _Reader, rel: str) -> dict[str, Any]:
    try:
        return tomllib.loads(reader.text(rel))
    except tomllib.TOMLDecodeError as exc:
        raise BackendError(f"{rel} is not valid TOML: {exc}", code="CONFIG_INVALID") from None


def _pipfile_line(reader: _Reader, rel: str, base: str, name: str, entry: object) -> str:
    """One Pipfile / Pipfile.lock entry as a requirement line (pipenv runs in ``base``)."""
    if isinstance(entry, str):
        entry = {"version": entry}
    if not isinstance(entry, dict):
        raise BackendError(f"{rel}: unexpected entry for {name}.", code="CONFIG_INVALID")
    extras = entry.get("extras") or []
    label = f"{name}[{','.join(extras)}]" if extras else name
    markers = entry.get("markers") or ""
    suffix = f"; {markers}" if markers else ""
    if "path" in entry or ("file" in entry and not str(entry["file"]).startswith("http")):
        local = str(entry.get("path") or entry.get("file"))
        if not os.path.isabs(local):
            local = _join(base, local)
        return reader.local_path(local or ".", rel)
    if "git" in entry:
        ref = f"@{entry['ref']}" if entry.get("ref") else ""
        line = f"{label} @ git+{entry['git']}{ref}{suffix}"
    elif "file" in entry:
        line = f"{label} @ {entry['file']}{suffix}"
    else:
        version = str(entry.get("version") or "")
        line = f"{label}{'' if version == '*' else version}{suffix}"
    reader.name_of(line)
    return line
