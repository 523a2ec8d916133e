"""lemond's command line: --version, --help, CLI11's usage errors, what it needs to start."""

from __future__ import annotations

import json

import pytest

from tests.contract.conftest import Launcher, copy_tree
from tests.contract.daemon import Lemond
from tests.support.httpserver import free_port

pytestmark = pytest.mark.contract


@pytest.mark.parametrize(
    "args",
    [["--version"], ["-v"], ["-vh"], ["--bogus", "--version"], ["--version", "a", "b"]],
    ids=["long", "short", "combined", "after-an-unknown-flag", "with-extra-arguments"],
)
def test_version_wins_and_exits_0(lemond: Lemond, launcher: Launcher, args: list[str]) -> None:
    # CLI11 acts on -v while parsing, so nothing else on the line matters.
    out = launcher.run(args)
    assert (out.returncode, out.stdout, out.stderr) == (0, f"lemond version {lemond.version}\n", "")


def test_help(lemond: Lemond, launcher: Launcher) -> None:
    out = launcher.run(["--help", "--bogus"])
    assert out.returncode == 0, out
    lines = out.stdout.splitlines()
    assert lines[0] == "lemond - Lightweight LLM server"
    assert lines[1] == f"Usage: {lemond.path} [OPTIONS] [cache_dir]"
    assert "  --port PORT                 Port number to serve on (overrides config.json)" in lines
    assert any(line.startswith("  --host HOST ") for line in lines)
    assert ("  --broadcast,--no-broadcast{false}" in lines) is lemond.v11


# (arguments, exit code, message on 10.x, on 11.x when it differs)
USAGE_ERRORS: dict[str, tuple[list[str], int, str, str | None]] = {
    "unknown-flag": (["--bogus"], 109, "argument was not expected: --bogus", None),
    "extra-positionals": (["a", "b", "c"], 109, "arguments were not expected: c b", None),
    "missing-value": (["--host"], 114, "--host: 1 required HOST missing", None),
    "bad-port": (["--port", "abc"], 104, "Could not convert: --port = abc", None),
    "bad-port-inline": (["--port=x"], 104, "Could not convert: --port = x", None),
    # 11.x knows --no-broadcast, 10.x does not: the same line fails differently.
    "no-broadcast": (
        ["--no-broadcast", "x", "y"],
        109,
        "arguments were not expected: y --no-broadcast",
        "argument was not expected: y",
    ),
}


@pytest.mark.parametrize("case", list(USAGE_ERRORS))
def test_usage_errors(lemond: Lemond, launcher: Launcher, case: str) -> None:
    args, code, v10_message, v11_message = USAGE_ERRORS[case]
    out = launcher.run(args)
    message = v11_message if lemond.v11 and v11_message else v10_message
    first, *rest = out.stderr.splitlines()
    assert out.returncode == code, out
    # CLI11 lists several unexpected arguments last first.
    assert first.endswith(message), out.stderr
    assert rest == ["Run with --help for more information."]
    assert out.stdout == ""


@pytest.mark.parametrize("broken", ["missing", "unparseable"])
def test_exits_1_without_usable_defaults_json(
    lemond: Lemond, launcher: Launcher, tmp_path_factory: pytest.TempPathFactory, broken: str
) -> None:
    copy = copy_tree(lemond, tmp_path_factory.mktemp("tree") / "opt")
    defaults = copy.parent / "resources" / "defaults.json"
    if broken == "missing":
        defaults.unlink()
        expected = f"Error: Failed to open {defaults}"
    else:
        defaults.write_text("{bad")
        expected = f"Error: Failed to parse {defaults}: "
    cache = tmp_path_factory.mktemp("c") / "cache"
    out = launcher.run([cache], binary=copy, timeout=30)
    assert out.returncode == 1, out
    assert expected in out.stdout
    assert "[Error] (main)" in out.stdout
    assert not cache.exists(), "the cache dir is created only after the defaults load"


def test_11x_needs_home(lemond: Lemond, launcher: Launcher) -> None:
    """11.x resolves its directories from HOME even when given a cache dir; 10.x does not."""
    port = free_port()
    text = json.dumps({"host": "127.0.0.1", "port": port})  # no config_version: 11.x migrates
    daemon = launcher.start(text, port=port, env={"HOME": None})
    if lemond.v11:
        assert daemon.wait_exit() == 1
        assert "HOME is not set; cannot resolve Lemonade cache directory" in daemon.output()
        # It stops before it reads anything: config.json is not even migrated.
        assert [p.name for p in daemon.cache.iterdir()] == ["config.json"]
        assert daemon.config_file.read_text() == text
    else:
        assert daemon.wait_healthy()["version"] == lemond.version
