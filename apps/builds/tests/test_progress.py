"""How the build log reads uv's and compileall's output (``backends.progress``).

The lines are what uv 0.13 and ``python -m compileall`` print (the real builds in
test_local_builder.py check the same wording against real runs); the clock is the test's, so
"five quiet seconds" needs no waiting.
"""

from __future__ import annotations

from apps.builds.backends.progress import (
    PROGRESS_EVERY,
    CompileOutput,
    Places,
    UvOutput,
    seconds,
    uv_duration,
)

ENV = "/srv/bindery/var/build/envs/0f3c9a1b2c3d4e5f60718293a4b5c6d7"
CHECKOUT = "/srv/bindery/var/checkouts/org-repo/.tmp-5d1e2f-abcd"
PYTHON = "/root/.pyenv/versions/3.11.7/bin/python3.11"
SITE = f"{ENV}/lib/python3.11/site-packages"
PLACES = Places(
    names=[(ENV, "<environment>"), (CHECKOUT, "the repository"), (PYTHON, "Python 3.11.7")],
    prefixes=[(CHECKOUT, "")],
)


class Clock:
    """The time a reader sees: moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def read(reader: UvOutput | CompileOutput, lines: list[str]) -> list[str]:
    said = [reader.line(line) for line in lines]
    return [line for line in said if line is not None]


def test_uv_milestones_are_kept_in_plain_words_and_path_lines_left_out() -> None:
    reader = UvOutput(PLACES, compiles=True)
    said = read(reader, [
        f"Using Python 3.11.7 environment at: {ENV}",
        "Resolved 114 packages in 42ms",
        "Downloading numpy (16.1MiB)",
        " Downloaded numpy",
        "Prepared 9 packages in 853ms",
        "Installed 1,204 packages in 2.66s",
        "Bytecode compiled 4100 files in 1m 03s",
        " + tabulate==0.9.0",
    ])  # fmt: skip
    assert said == [
        "Resolved 114 packages in 42 ms",
        "Downloading numpy (16.1 MiB)",
        " Downloaded numpy",
        "Prepared 9 packages (downloaded or built) in 0.9 s",
        "Installed 1,204 packages in 2.7 s",
        "Compiled bytecode: 4,100 files in 1 min 3 s",
        " + tabulate==0.9.0",
    ]


def test_uv_venv_says_what_it_does_without_where() -> None:
    reader = UvOutput(PLACES, doing=None)
    said = read(reader, [
        f"Using CPython 3.11.7 interpreter at: {PYTHON}",
        f"Creating virtual environment at: {ENV}",
        f"Activate with: source {ENV}/bin/activate",
    ])  # fmt: skip
    assert said == ["Creating the virtual environment"]


def test_paths_in_other_lines_are_named_for_people() -> None:
    reader = UvOutput(PLACES)
    said = read(reader, [
        f"   Building hello-bindery @ file://{CHECKOUT}",
        f" + hello-bindery==0.1 (from file://{CHECKOUT})",
        f"error: File not found: `{CHECKOUT}/binder/constraints.txt`",
        f"warning: `{PYTHON}` is not the environment's interpreter ({ENV}/bin/python)",
    ])  # fmt: skip
    assert said == [
        "   Building hello-bindery @ the repository",
        " + hello-bindery==0.1 (from the repository)",
        "error: File not found: `binder/constraints.txt`",
        "warning: `Python 3.11.7` is not the environment's interpreter (<environment>/bin/python)",
    ]


def test_an_attempt_expected_to_fail_holds_its_error_back() -> None:
    reader = UvOutput(PLACES, hold_errors=True)
    said = read(reader, [
        "Resolved 3 packages in 5ms",
        "  \u00d7 Failed to build `hello-bindery @ file://" + CHECKOUT + "`",
        "  ╰─▶ Building source distributions is disabled",
    ])  # fmt: skip
    assert said == ["Resolved 3 packages in 5 ms"]
    assert reader.held == [
        "  \u00d7 Failed to build `hello-bindery @ the repository`",
        "  ╰─▶ Building source distributions is disabled",
    ]


def test_a_quiet_uv_gets_a_progress_line_every_few_seconds_naming_its_step() -> None:
    clock = Clock()
    reader = UvOutput(PLACES, compiles=True, clock=clock)
    clock.now += PROGRESS_EVERY - 0.1
    assert reader.tick() is None  # not quiet long enough yet
    clock.now += 0.1
    assert reader.tick() == "Resolving dependencies… (5 s)"
    assert reader.tick() is None  # at most one every PROGRESS_EVERY seconds
    clock.now += PROGRESS_EVERY
    assert reader.tick() == "Resolving dependencies… (10 s)"

    reader.line("Resolved 87 packages in 10.02s")
    reader.line("Downloading scipy (35.2MiB)")
    reader.line("Downloading numpy (16.1MiB)")
    clock.now += PROGRESS_EVERY - 1
    assert reader.tick() is None  # uv spoke a moment ago
    clock.now += 1
    assert reader.tick() == "Downloading scipy and numpy… (5 s)"
    reader.line(" Downloaded numpy")
    reader.line(" Downloaded scipy")
    clock.now += PROGRESS_EVERY
    assert reader.tick() == "Installing 87 packages… (10 s)"  # since uv resolved

    reader.line("Prepared 87 packages in 12.5s")
    reader.line("Installed 87 packages in 3.1s")
    clock.now += 65
    assert reader.tick() == "Compiling bytecode… (1 min 5 s)"
    reader.line("Bytecode compiled 4100 files in 70.3s")
    clock.now += 60
    assert reader.tick() is None  # nothing left that takes time


def test_source_builds_in_progress_are_named() -> None:
    clock = Clock()
    reader = UvOutput(PLACES, clock=clock)
    read(reader, [
        "Resolved 3 packages in 0.6s",
        f"   Building hello-bindery @ file://{CHECKOUT}",
        "   Building pyyaml==5.4.1",
    ])  # fmt: skip
    clock.now += PROGRESS_EVERY
    assert reader.tick() == "Building hello-bindery and pyyaml from source… (5 s)"
    read(reader, [f"      Built hello-bindery @ file://{CHECKOUT}", "      Built pyyaml==5.4.1"])
    clock.now += PROGRESS_EVERY
    assert reader.tick() == "Installing 3 packages… (10 s)"


def test_compileall_files_are_counted_not_logged() -> None:
    clock = Clock()
    reader = CompileOutput(Places(prefixes=[(SITE, "")]), clock=clock)
    said = read(reader, [
        f"Listing '{SITE}'...",
        f"Compiling '{SITE}/tabulate/__init__.py'...",
        f"Compiling '{SITE}/toolz/itertoolz.py'...Compiling '{SITE}/toolz/curried.py'...",
    ])  # fmt: skip
    assert said == []
    clock.now += PROGRESS_EVERY
    assert reader.tick() == "Compiling bytecode: 3 files… (5 s)"
    said = read(reader, [
        f"Compiling '{SITE}/bad/broken.py'...",
        f'***   File "{SITE}/bad/broken.py", line 1',
        "    def (",
        "        ^",
        "SyntaxError: invalid syntax",
        f"Compiling '{SITE}/toolz/utils.py'...    def f(",  # two workers' output in one line
    ])  # fmt: skip
    assert said == [
        '***   File "bad/broken.py", line 1', "    def (", "        ^",
        "SyntaxError: invalid syntax", "def f(",
    ]  # fmt: skip
    clock.now += 1.3
    assert reader.end(1) == "Compiled bytecode: 5 files in 6.3 s"


def test_compileall_with_nothing_to_compile_says_nothing() -> None:
    reader = CompileOutput(Places())
    assert read(reader, ["Listing '/x/site-packages'..."]) == []
    assert reader.end(0) is None


def test_durations_read_as_people_say_them() -> None:
    assert [seconds(s) for s in (0.0421, 0.1, 3.14, 59.94, 125.4)] == [
        "42 ms", "0.1 s", "3.1 s", "59.9 s", "2 min 5 s",
    ]  # fmt: skip
    assert [uv_duration(t) for t in ("42ms", "0.05ms", "2.66s", "1m 03s", "soon")] == [
        "42 ms", "0 ms", "2.7 s", "1 min 3 s", "soon",
    ]  # fmt: skip
