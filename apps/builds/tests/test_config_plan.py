"""repo2docker configuration → BuildPlan: a pure function of a directory (no uv, no git)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from apps.builds.backends.config import conda_to_requirement, read_plan
from portal.errors import BackendError


def make(root: Path, files: dict[str, str]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return root


def refused(root: Path) -> BackendError:
    with pytest.raises(BackendError) as info:
        read_plan(root)
    assert info.value.permanent
    return info.value


def test_requirements_txt_at_the_root(tmp_path):
    plan = read_plan(make(tmp_path, {"requirements.txt": "tabulate==0.9.0\n# note\n\n"}))
    assert plan.config_files == ("requirements.txt",)
    assert plan.requirements == ("tabulate==0.9.0",)
    assert plan.requirement_names == {"tabulate"}
    assert plan.dependency_files == ("requirements.txt",)
    assert plan.python_version == ""
    assert not plan.installs_repository


def test_binder_dir_hides_every_root_file(tmp_path):
    make(
        tmp_path,
        {
            "Dockerfile": "FROM ubuntu\n",
            "apt.txt": "vim\n",
            "requirements.txt": "no-such-package\n",
            "setup.py": "from setuptools import setup; setup()\n",
            "binder/requirements.txt": "tabulate\n",
            "binder/postBuild": "echo hi\n",
            "binder/start": 'exec "$@"\n',
        },
    )
    plan = read_plan(tmp_path)
    assert plan.config_dir == "binder"
    assert plan.requirements == ("tabulate",)
    assert plan.config_files == ("binder/requirements.txt", "binder/postBuild", "binder/start")
    assert plan.postbuild == "binder/postBuild"
    assert plan.start == "binder/start"
    assert not plan.installs_repository


def test_dot_binder_is_a_binder_dir(tmp_path):
    plan = read_plan(make(tmp_path, {".binder/requirements.txt": "toolz\n"}))
    assert plan.config_files == (".binder/requirements.txt",)


def test_binder_and_dot_binder_together_are_refused(tmp_path):
    make(tmp_path, {"binder/requirements.txt": "a\n", ".binder/requirements.txt": "b\n"})
    assert refused(tmp_path).code == "BINDER_DIR_CONFLICT"


@pytest.mark.parametrize(
    ("files", "named"),
    [
        ({"Dockerfile": "FROM x\n", "requirements.txt": "a\n"}, "Dockerfile"),
        ({"binder/Dockerfile": "FROM x\n"}, "binder/Dockerfile"),
        ({"Project.toml": "[deps]\n"}, "Project.toml"),
        ({"JuliaProject.toml": "[deps]\n"}, "JuliaProject.toml"),
        ({"REQUIRE": "julia 0.6\n"}, "REQUIRE"),
        ({"default.nix": "{}\n"}, "default.nix"),
        ({"install.R": "install.packages('x')\n"}, "install.R"),
        ({"runtime.txt": "r-4.1-2022-01-01\n"}, "runtime.txt"),
        ({"DESCRIPTION": "Package: x\n"}, "DESCRIPTION"),
        ({"apt.txt": "graphviz\n", "requirements.txt": "a\n"}, "apt.txt"),
        ({"binder/apt.txt": "graphviz\n"}, "binder/apt.txt"),
    ],
)
def test_kubernetes_only_configuration_is_refused_naming_the_file(tmp_path, files, named):
    error = refused(make(tmp_path, files))
    assert error.code == "NEEDS_KUBERNETES"
    assert error.message.startswith(f"{named} asks for")
    assert "Kubernetes backend" in error.message


@pytest.mark.parametrize("runtime", ["python-2.7", "python-2", "python-2.7.18"])
def test_python_2_is_refused(tmp_path, runtime):
    error = refused(make(tmp_path, {"runtime.txt": runtime + "\n"}))
    assert error.code == "PYTHON2_UNSUPPORTED"
    assert "runtime.txt" in error.message


@pytest.mark.parametrize(
    ("runtime", "version"), [("python-3.12", "3.12"), ("python-3.8.10", "3.8"), ("python-3", "")]
)
def test_runtime_txt_sets_the_python_version(tmp_path, runtime, version):
    plan = read_plan(make(tmp_path, {"runtime.txt": runtime}))
    assert plan.python_version == version
    assert "runtime.txt" in plan.dependency_files


def test_unreadable_runtime_is_refused(tmp_path):
    assert refused(make(tmp_path, {"runtime.txt": "pypy-3\n"})).code == "RUNTIME_INVALID"


def test_setup_py_and_pyproject_install_the_repository(tmp_path):
    make(
        tmp_path,
        {
            "requirements.txt": "toolz\n",
            "setup.py": "from setuptools import setup; setup()\n",
            "pyproject.toml": "[build-system]\nrequires = ['setuptools']\n",
        },
    )
    plan = read_plan(tmp_path)
    assert plan.config_files == ("requirements.txt", "setup.py", "pyproject.toml")
    assert plan.requirements == ("toolz", "./")
    assert plan.installs_repository


def test_tool_settings_pyproject_is_not_a_package(tmp_path):
    plan = read_plan(make(tmp_path, {"pyproject.toml": "[tool.ruff]\nline-length = 99\n"}))
    assert plan.requirements == ()
    assert not plan.installs_repository


def test_requirement_includes_are_inlined_and_local_paths_rewritten(tmp_path):
    make(
        tmp_path,
        {
            "binder/requirements.txt": "-r more.txt\n-c pins.txt\n-e .\nsub/pkg\n"
            "--index-url https://example.org/simple\n--no-deps\n",
            "binder/more.txt": "tabulate==0.9.0 \\\n  --hash=sha256:abc\n",
            "binder/pins.txt": "toolz<2\n",
        },
    )
    (tmp_path / "sub" / "pkg").mkdir(parents=True)
    plan = read_plan(tmp_path)
    assert plan.requirements == (
        "tabulate==0.9.0 --hash=sha256:abc",
        "-c ./binder/pins.txt",
        "./",
        "./sub/pkg",
        "--index-url https://example.org/simple",
    )
    assert plan.dependency_files == (
        "binder/requirements.txt",
        "binder/more.txt",
        "binder/pins.txt",
    )
    assert plan.requirement_names == {"tabulate"}
    assert plan.installs_repository
    assert any("not in editable mode" in w for w in plan.warnings)
    assert any("'--no-deps' is ignored" in w for w in plan.warnings)


@pytest.mark.parametrize(
    "files",
    [
        {"requirements.txt": "-r ../../../etc/passwd\n"},
        {"requirements.txt": "-c /etc/passwd\n"},
        {"requirements.txt": "/opt/somewhere\n"},
        {"requirements.txt": "-e ../outside\n"},
        {"requirements.txt": "pkg @ file:///etc\n"},
    ],
)
def test_paths_leaving_the_checkout_are_refused(tmp_path, files):
    repo = tmp_path / "repo"
    assert refused(make(repo, files)).code == "CONFIG_OUTSIDE_REPO"


def test_symlinked_config_file_pointing_outside_is_refused(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (tmp_path / "secret").write_text("top secret\n")
    os.symlink(tmp_path / "secret", repo / "requirements.txt")
    error = refused(repo)
    assert error.code == "CONFIG_OUTSIDE_REPO"
    assert "top secret" not in error.message


def test_environment_yml_pip_section_and_conda_packages(tmp_path):
    make(
        tmp_path,
        {
            "environment.yml": "name: demo\nchannels: [conda-forge]\ndependencies:\n"
            "  - python=3.10\n  - pip\n  - conda-forge::numpy=1.26\n  - r-base\n"
            "  - _libgcc_mutex\n  - pip:\n    - tabulate==0.9.0\n    - -r extra.txt\n",
            "extra.txt": "toolz\n",
            "runtime.txt": "python-3.12\n",
            "requirements.txt": "ignored\n",
        },
    )
    plan = read_plan(tmp_path)
    assert plan.python_version == "3.10"
    assert plan.python_source == "environment.yml"
    assert plan.requirements == ("tabulate==0.9.0", "toolz")
    assert plan.conda_packages == ("numpy==1.26.*", "r-base")
    assert plan.requirement_names == {"tabulate", "toolz", "numpy", "r-base"}
    assert plan.dependency_files == ("environment.yml", "extra.txt")
    assert any("_libgcc_mutex" in w for w in plan.warnings)
    assert any("runtime.txt, requirements.txt are ignored" in w for w in plan.warnings)


def test_environment_yml_python_2_is_refused(tmp_path):
    make(tmp_path, {"environment.yml": "dependencies:\n  - python=2.7\n"})
    assert refused(tmp_path).code == "PYTHON2_UNSUPPORTED"


def test_broken_environment_yml_is_a_config_error(tmp_path):
    assert refused(make(tmp_path, {"environment.yml": "a: [\n"})).code == "CONFIG_INVALID"


@pytest.mark.parametrize(
    ("spec", "requirement"),
    [
        ("numpy", "numpy"),
        ("numpy=1.26", "numpy==1.26.*"),
        ("numpy=1.26.*", "numpy==1.26.*"),
        ("numpy==1.26.4", "numpy==1.26.4"),
        ("numpy>=1.2,<2", "numpy<2,>=1.2"),
        ("numpy 1.26.4 py311h64a7726_0", "numpy==1.26.4"),
        ("numpy=1.26.4=py311h64a7726_0", "numpy==1.26.4.*"),
        ("conda-forge::scipy", "scipy"),
        ("numpy 1.2|1.3", "numpy"),
        ("_libgcc_mutex", None),
    ],
)
def test_conda_specs_become_requirements_of_the_same_name(spec, requirement):
    assert conda_to_requirement(spec) == requirement


def test_pipfile_lock_wins_over_pipfile_and_brings_dev_packages(tmp_path):
    make(
        tmp_path,
        {
            "Pipfile": "[packages]\nno-such-package = '*'\n[requires]\npython_version = '3.9'\n",
            "Pipfile.lock": '{"_meta": {"requires": {"python_version": "3.12"}},'
            ' "default": {"tabulate": {"version": "==0.9.0", "hashes": ["sha256:x"]},'
            ' "mypkg": {"path": ".", "editable": true}},'
            ' "develop": {"toolz": {"version": "==1.0.0", "markers": "python_version >= \'3\'"}}}',
            "requirements.txt": "ignored\n",
        },
    )
    plan = read_plan(tmp_path)
    assert plan.config_files == ("Pipfile.lock",)
    assert plan.requirements == (
        "tabulate==0.9.0",
        "./",
        "toolz==1.0.0; python_version >= '3'",
    )
    assert plan.python_version == "3.12"
    assert plan.python_source == "Pipfile.lock"
    assert plan.installs_repository
    assert any("requirements.txt is ignored" in w for w in plan.warnings)


def test_pipfile_alone(tmp_path):
    make(
        tmp_path,
        {
            "binder/Pipfile": "[packages]\ntabulate = '*'\nrequests = {version = '>=2', "
            "extras = ['socks']}\n[dev-packages]\ntoolz = '==1.0.0'\n",
        },
    )
    plan = read_plan(tmp_path)
    assert plan.config_files == ("binder/Pipfile",)
    assert plan.requirements == ("tabulate", "requests[socks]>=2", "toolz==1.0.0")
    assert plan.python_version == ""


def test_no_configuration_gives_an_empty_plan(tmp_path):
    plan = read_plan(make(tmp_path, {"README.md": "hi\n"}))
    assert plan.config_files == ()
    assert plan.requirements == ()
    assert plan.dependency_files == ()


def test_runtime_txt_is_not_read_for_python_when_environment_yml_is_used(tmp_path):
    make(tmp_path, {"environment.yml": "dependencies: [toolz]\n", "runtime.txt": "pypy-3\n"})
    plan = read_plan(tmp_path)
    assert plan.python_version == ""
    assert plan.conda_packages == ("toolz",)
    assert any("runtime.txt is ignored" in w for w in plan.warnings)
