"""The lean start (``lean_singleuser.py``): session servers run ``jupyterhub-singleuser``
without the hub's ORM, SQLAlchemy and Alembic in their imports, fall back to the plain
import where a JupyterHub release takes more from those modules, and leave the real modules
to whatever imports them later.

Real parts: the servers are started by a real hub in a real sandbox (``running_server``),
and the imports run in the test environment's own Python with the base set installed. What a
server has imported is read from outside, in ``/proc/<pid>/maps``: SQLAlchemy's compiled
modules are mapped once it is imported (the control shows they are, with the plain import).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import requests

from apps.sessions.backends.local.spawner import LEAN_HOST, LEAN_INSIDE, BinderySpawner
from apps.sessions.tests.conftest import Hub, Running, launch_maker, server_processes

SQLALCHEMY = f"{os.sep}sqlalchemy{os.sep}"


def _mapped(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def _run(env: Path, code: str) -> dict[str, Any]:
    """Run ``code`` in the environment's Python; it prints one JSON object."""
    result = subprocess.run(
        [str(env / "bin" / "python"), "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    out: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return out


LEAN = f"""
import json, runpy, sys
ns = runpy.run_path({LEAN_HOST!r}, run_name="bindery_check")
stand_ins = ns["STAND_INS"]
"""

REPORT = """
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("sqlalchemy", "alembic")
                or m.startswith(("jupyterhub.orm", "jupyterhub.handlers")))
maps = open("/proc/self/maps").read()
print(json.dumps({"lean": lean, "loaded": loaded, "main": main.__qualname__,
                  "mapped": "/sqlalchemy/" in maps}))
"""


def test_a_sandboxed_server_runs_without_sqlalchemy_loaded(hub: Hub) -> None:
    client = hub.client()
    launch = launch_maker(hub)("lena", "session-1", start_script="")  # no start script
    client.ensure_user("lena")
    client.start_server("lena", "session-1", launch.user_options)
    try:
        events = list(client.iter_progress("lena", "session-1"))
        assert events[-1].get("ready"), f"{events}\n{hub.log()[-3000:]}"
        (pid,) = server_processes("lena", "session-1")
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        at = cmdline.index(LEAN_INSIDE.encode())  # the file the sandbox shows read-only
        assert cmdline[at - 1] == os.path.join(launch.options.env_path, "bin", "python").encode()
        maps = _mapped(pid)
        assert f"{os.sep}tornado{os.sep}" in maps  # the server's own compiled modules are there
        assert SQLALCHEMY not in maps
        # and it checks the hub's tokens as ever (HubAuth, scopes)
        token, _ = client.create_server_token("lena", "session-1", expires_in=600)
        api = f"{hub.public_url}/user/lena/session-1/api/status"
        assert requests.get(api, headers={"Authorization": f"token {token}"}).status_code == 200
        assert requests.get(api, headers={"Authorization": "token wrong"}).status_code == 403
    finally:
        client.stop_server("lena", "session-1")


def test_a_server_with_a_start_script_gets_the_plain_command(running_server: Running) -> None:
    (pid,) = server_processes("alice", "session-1")  # its launch has binder/start
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert LEAN_INSIDE.encode() not in cmdline
    assert any(arg.endswith(b"/bin/jupyterhub-singleuser") for arg in cmdline)


def test_the_plain_import_maps_sqlalchemy_the_control(single_user_env: Path) -> None:
    got = _run(
        single_user_env, "import json, sys\nfrom jupyterhub.singleuser import main\nlean = None\n"
        + REPORT,
    )  # fmt: skip
    assert got["mapped"] is True
    assert "jupyterhub.orm" in got["loaded"] and "sqlalchemy.orm" in got["loaded"]


def test_the_lean_import_gives_the_same_main_without_the_hubs_modules(
    single_user_env: Path,
) -> None:
    got = _run(single_user_env, LEAN + 'main, lean = ns["lean_import"]()\n' + REPORT)
    assert got == {
        "lean": True,
        "loaded": [],
        "main": "ExtensionApp.launch_instance",  # jupyterhub.singleuser.main, as the script's
        "mapped": False,
    }


def test_what_imports_them_afterwards_gets_the_real_modules(single_user_env: Path) -> None:
    code = LEAN + (
        'main, lean = ns["lean_import"]()\n'
        "import sqlalchemy.exc, jupyterhub.orm, jupyterhub.handlers.pages, jupyterhub.metrics\n"
        "import jupyterhub.utils\n"
        "print(json.dumps({'lean': lean, 'version': sqlalchemy.__version__,\n"
        "  'orm_user': hasattr(jupyterhub.orm, 'User'),\n"
        "  'handler': jupyterhub.handlers.pages.HealthCheckHandler.__module__,\n"
        "  'stand_in_left': jupyterhub.utils.SQLAlchemyError is sqlalchemy.exc.SQLAlchemyError}))"
    )
    got = _run(single_user_env, code)
    assert got["lean"] is True
    assert str(got["version"])[0].isdigit()  # the real SQLAlchemy, not the stand-in
    assert got["orm_user"] is True
    assert got["handler"] == "jupyterhub.handlers.pages"
    # jupyterhub.utils keeps the stand-in it took while importing: only the hub's own
    # catch_db_error uses it, which a single-user server never runs
    assert got["stand_in_left"] is False


def test_a_release_that_takes_more_from_them_falls_back_to_the_plain_import(
    single_user_env: Path,
) -> None:
    # as if a JupyterHub release imported a name the stand-ins do not hold
    code = (
        LEAN
        + (
            "stand_ins = tuple((name, {}) if name == 'jupyterhub.handlers.pages' else (name, names)"
            " for name, names in stand_ins)\n"
            'main, lean = ns["lean_import"](stand_ins)\n'
            "import jupyterhub.handlers.pages\n"
            "real = jupyterhub.handlers.pages.HealthCheckHandler.__module__\n"
        )
        + REPORT.replace('"mapped"', '"real": real, "mapped"')
    )
    got = _run(single_user_env, code)
    assert got["lean"] is False
    assert got["main"] == "ExtensionApp.launch_instance"
    assert got["real"] == "jupyterhub.handlers.pages"
    assert "jupyterhub.orm" in got["loaded"] and got["mapped"] is True


def test_a_stand_in_names_itself_when_asked_for_more(single_user_env: Path) -> None:
    code = LEAN + (
        'module = ns["_stand_in"]("jupyterhub.orm", {})\n'
        "try:\n    module.User\nexcept AttributeError as exc:\n    message = str(exc)\n"
        "print(json.dumps({'message': message}))"
    )
    got = _run(single_user_env, code)
    assert got["message"] == (
        "jupyterhub.orm.User is not loaded in a single-user server (Bindery's lean start)"
    )


def test_the_server_command_follows_the_setting(tmp_path: Path) -> None:
    spawner = BinderySpawner(lean_start=True)
    env = str(tmp_path / "env")
    assert spawner._server_command(env, sandboxed=True) == [f"{env}/bin/python", LEAN_INSIDE]
    assert spawner._server_command(env, sandboxed=False) == [f"{env}/bin/python", LEAN_HOST]
    # a repository's start script gets what repo2docker's images give it
    assert spawner._server_command(env, sandboxed=True, start_script="binder/start") == [
        f"{env}/bin/jupyterhub-singleuser"
    ]
    spawner.lean_start = False
    assert spawner._server_command(env, sandboxed=True) == [f"{env}/bin/jupyterhub-singleuser"]


# node as the environment finds it on the PATH, noting each run in a file: the real node runs
NODE_NOTING = """#!/bin/sh
echo "$@" >> {notes}
exec {node} "$@"
"""

YARN = (
    LEAN
    + """
import jupyterlab.commands as commands
real = commands._yarn_config
if with_finder:
    ns["without_yarn_at_import"]()
import jupyterlab.labapp as labapp
runs_at_import = open(notes).read().count("config --json") if os.path.exists(notes) else 0
registry = commands._AppHandler(None).registry  # the extension manager's and builds' lookup
print(json.dumps({"version": labapp.app_version, "runs_at_import": runs_at_import,
                  "restored": commands._yarn_config is real,
                  "runs_after": open(notes).read().count("config --json"),
                  "registry": registry}))
"""
)


def test_jupyterlab_is_imported_without_running_yarn_and_yarn_answers_afterwards(
    single_user_env: Path, tmp_path: Path
) -> None:
    node = shutil.which("node")
    assert node, "node is part of this machine's set (apt nodejs)"
    (tmp_path / "bin").mkdir()
    noting = tmp_path / "bin" / "node"
    got = {}
    for with_finder in (False, True):
        notes = tmp_path / f"notes-{with_finder}"
        noting.write_text(NODE_NOTING.format(notes=notes, node=node))
        noting.chmod(0o755)
        code = f"import os\nnotes = {str(notes)!r}\nwith_finder = {with_finder}\n" + YARN
        result = subprocess.run(
            [str(single_user_env / "bin" / "python"), "-c", code],
            capture_output=True, text=True, timeout=120,
            env={**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        got[with_finder] = json.loads(result.stdout.strip().splitlines()[-1])
    # the control: importing labapp runs `node yarn.js config --json` once
    assert got[False]["runs_at_import"] == 1
    # the lean start: not at import, the same version, and the real lookup afterwards
    assert got[True]["runs_at_import"] == 0
    assert got[True]["version"] == got[False]["version"]
    assert got[True]["restored"] is True
    assert got[True]["runs_after"] == 1
    assert got[True]["registry"] == got[False]["registry"]
