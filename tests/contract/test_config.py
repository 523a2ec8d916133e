"""config.json at start: written when missing, replaced when broken, kept (10.x) or migrated
to config_version 2 (11.x), and what the command line and the environment add to it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hal0_lemonade.resources.daemon_config import baseline
from tests.contract.conftest import Launcher
from tests.contract.daemon import Lemond
from tests.contract.spec import deep_merge, dump_config, migrated_11
from tests.support.httpserver import free_port

pytestmark = pytest.mark.contract


def test_missing_config_is_written_with_the_defaults(
    lemond: Lemond, launcher: Launcher, default_port: int
) -> None:
    daemon = launcher.start(None, port=default_port)
    assert daemon.wait_healthy()["version"] == lemond.version
    assert daemon.config_file.read_text() == dump_config(lemond.defaults())


def test_lemonade_variables_seed_a_new_config_on_10x_only(
    lemond: Lemond, launcher: Launcher, default_port: int
) -> None:
    port = free_port()
    env = {
        "LEMONADE_PORT": str(port),
        "LEMONADE_NO_BROADCAST": "yes",
        "LEMONADE_CTX_SIZE": "8192",
        "LEMONADE_LLAMACPP_ARGS": "--threads 3",
    }
    daemon = launcher.start(None, port=default_port if lemond.v11 else port, env=env)
    daemon.wait_healthy()
    expected = lemond.defaults()
    if not lemond.v11:  # each parsed as the type of the default it replaces
        overlay = {"port": port, "no_broadcast": True, "ctx_size": 8192}
        expected = deep_merge(expected, {**overlay, "llamacpp": {"args": "--threads 3"}})
    assert daemon.config_file.read_text() == dump_config(expected)


@pytest.mark.parametrize("text", ["{not json", ""], ids=["garbage", "empty"])
def test_unparseable_config_is_set_aside_and_defaults_used(
    lemond: Lemond, launcher: Launcher, default_port: int, text: str
) -> None:
    # The broken file names a port; lemond cannot know that and starts on its default.
    daemon = launcher.start(text, port=default_port)
    assert daemon.wait_healthy()["version"] == lemond.version
    assert (daemon.cache / "config.json.corrupted").read_text() == text
    assert daemon.config_file.read_text() == dump_config(lemond.defaults())
    assert f"Renamed to {daemon.cache}/config.json.corrupted" in daemon.output()


@pytest.mark.parametrize("text", ["[]", "5", "null"])
def test_json_that_is_no_object_stops_lemond(lemond: Lemond, launcher: Launcher, text: str) -> None:
    daemon = launcher.start(text)
    assert daemon.wait_exit() == 1
    assert "[Error] (main) Error: [json.exception.type_error." in daemon.output()
    # Not renamed; 11.x's migration has turned a null into an object before it failed.
    expected = dump_config({"config_version": 2}) if lemond.v11 and text == "null" else text
    assert daemon.config_file.read_text() == expected
    assert [p.name for p in daemon.cache.iterdir()] == ["config.json"]


def _cases(host: str, port: int) -> dict[str, dict[str, Any]]:
    hal0 = baseline(threads=2, host=host, port=port, models_dir="/var/lib/hal0/models")
    return {
        "hal0-baseline": {**hal0, "zz_operator": {"kept": True}},
        "v1-own-values": {
            "config_version": 1,
            "ctx_size": 8192,
            "no_broadcast": False,
            "global_timeout": 300,  # 10.x's default, kept all the same
            "zz_unknown": 5,
            "llamacpp": {"args": "x", "zz_nested": [1, {"a": None}]},
            "extra_models_dir": "/m/ü €",
        },
        "no-version": {"ctx_size": 4096},
        "v0": {"config_version": 0, "ctx_size": 4096},
        "v1-ctx-float": {"config_version": 1, "ctx_size": 4096.0},
        "v1-both-broadcast-keys": {"config_version": 1, "no_broadcast": True, "broadcast": True},
        "v2-no-broadcast": {"config_version": 2, "ctx_size": 4096, "no_broadcast": True},
        "v2-untouched": {"config_version": 2, "ctx_size": 4096, "extra_models_dir": "/m/ü"},
        "v3-no-broadcast": {"config_version": 3, "no_broadcast": False},
    }


CASE_NAMES = list(_cases("h", 1))


@pytest.mark.parametrize("case", CASE_NAMES)
def test_existing_config_kept_by_10x_and_migrated_by_11x(
    lemond: Lemond, launcher: Launcher, case: str
) -> None:
    port = free_port()
    config = _cases("127.0.0.1", port)[case]
    config.setdefault("host", "127.0.0.1")
    config.setdefault("port", port)
    text = json.dumps(config, indent=4, ensure_ascii=False)  # not lemond's own formatting
    cache = launcher.workdir() / "cache"
    cache.mkdir()
    (cache / "config.json").write_text(text, encoding="utf-8")
    before = (cache / "config.json").stat()
    daemon = launcher.start(None, cache=cache, port=port)
    daemon.wait_healthy()
    expected, notes = migrated_11(config, lemond.defaults()) if lemond.v11 else (None, [])
    after = daemon.config_file.stat()
    logged = [line.split(") ", 1)[1] for line in daemon.output().splitlines() if "(load)" in line]
    assert logged == notes
    if expected is None:
        assert daemon.config_file.read_text() == text
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    else:
        assert daemon.config_file.read_text() == dump_config(expected)
        assert "no_broadcast" not in expected
        assert expected["config_version"] >= 2


def test_11x_refuses_a_non_boolean_no_broadcast(lemond: Lemond, launcher: Launcher) -> None:
    if not lemond.v11:
        pytest.skip("10.6.0 aborts (SIGABRT) some time after start instead: no contract")
    text = json.dumps({"config_version": 2, "no_broadcast": "yes"})
    daemon = launcher.start(text)
    assert daemon.wait_exit() == 1
    assert "Error: 'no_broadcast' must be a boolean" in daemon.output()
    assert daemon.config_file.read_text() == text


def test_port_and_host_flags_win_and_are_saved(lemond: Lemond, launcher: Launcher) -> None:
    config = {"config_version": 2 if lemond.v11 else 1, "host": "127.0.0.2", "port": free_port()}
    flag_port = free_port()
    args = ["--port", str(flag_port), "--host=127.0.0.1"]
    daemon = launcher.start(config, args=args, port=flag_port, host="127.0.0.1")
    # launcher.start took host/port from the mapping: point the client at the flags'.
    daemon.host, daemon.port = "127.0.0.1", flag_port
    assert daemon.wait_healthy()["version"] == lemond.version
    expected = deep_merge(lemond.defaults(), {**config, "host": "127.0.0.1", "port": flag_port})
    assert daemon.config_file.read_text() == dump_config(expected)
