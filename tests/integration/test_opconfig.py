"""The operator's /etc/hal0/lemonade.toml through the CLI: install, status, config show."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import CLI, Served, install_args, snapshot

TOML = "etc/hal0/lemonade.toml"
CONFIG = "var/lib/hal0/lemonade/config.json"
UNIT = "etc/systemd/system/hal0-lemonade.service"


def _write(root: Path, text: str) -> None:
    (root / TOML).parent.mkdir(parents=True, exist_ok=True)
    (root / TOML).write_text(text)


def _config(root: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((root / CONFIG).read_text())
    return doc


def test_operator_values_reach_config_json_and_the_unit(
    cli: CLI, installed: tuple[Path, Served]
) -> None:
    root, s = installed
    _write(
        root,
        "port = 13400\nthreads = 5\nmax_loaded_models = 2\n"
        '[llamacpp]\nbackend = "vulkan"\nextra_args = ["--no-mmap", "--flash-attn", "on"]\n',
    )
    dry = cli(*[a for a in install_args(root, s, "--dry-run") if a != "--json"])
    assert '-  "max_loaded_models": 4,' in dry.out and '+  "max_loaded_models": 2,' in dry.out

    run = cli(*install_args(root, s))
    assert run.code == 0, run.err
    changed = {st["name"] for st in run.json["steps"] if st["status"] == "changed"}
    assert changed == {"Daemon config", "systemd unit"}
    config = _config(root)
    assert config["port"] == 13400 and config["max_loaded_models"] == 2
    assert config["llamacpp"]["backend"] == "vulkan"
    assert config["llamacpp"]["args"] == "--parallel 1 --threads 5 --no-mmap --flash-attn on"
    assert config["host"] == "127.0.0.1"
    assert "http://127.0.0.1:13400/internal/shutdown" in (root / UNIT).read_text()
    backup = json.loads((root / f"{CONFIG}.bak").read_text())
    assert backup["max_loaded_models"] == 4 and backup["port"] == 13305

    status = cli("status", "--root", root, "--json")
    assert status.code == 0, status.out
    assert cli(*install_args(root, s)).json["changed"] is False


def test_drift_from_the_operator_file_is_reported_and_reconverged(
    cli: CLI, installed: tuple[Path, Served]
) -> None:
    root, s = installed
    _write(root, 'max_loaded_models = 2\n[llamacpp]\nextra_args = "--no-mmap"\n')
    assert cli(*install_args(root, s)).code == 0
    config = _config(root)
    config["max_loaded_models"] = 3  # lemond's POST /internal/set at run time
    config["llamacpp"]["args"] = "--parallel 1 --threads 2"
    (root / CONFIG).write_text(json.dumps(config))

    run = cli("status", "--root", root)
    assert run.code == 1
    assert "max_loaded_models is 3, /etc/hal0/lemonade.toml asks 2" in run.out
    assert "not '--parallel 1 --threads N --no-mmap'" in run.out
    assert cli(*install_args(root, s)).step("Daemon config")["status"] == "changed"
    assert cli("status", "--root", root).code == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_loaded_model = 2\n", "'max_loaded_model' is not a known key"),
        ("[llamacpp]\nextra_args = '--no-mmap --threads 16'\n", "may not contain --threads"),
        ('host = "0.0.0.0"\n', "host is locked by hal0"),
        ("port = [\n", "is not valid TOML"),
    ],
)
def test_a_bad_operator_file_is_refused_before_anything_changes(
    cli: CLI, installed: tuple[Path, Served], text: str, message: str
) -> None:
    root, s = installed
    _write(root, text)
    before = snapshot(root)
    run = cli(*[a for a in install_args(root, s) if a != "--json"])
    assert run.code == 2
    assert f"error: {root}/{TOML}: " not in run.err, "host paths, not sandbox paths"
    assert "error: /etc/hal0/lemonade.toml" in run.err and message in run.err
    assert "hint: " in run.err
    assert snapshot(root) == before  # refused before the lock: not even its file
    assert cli("config", "show", "--root", root).code == 2
    # status reports it as one failed check among the others (doctor alike).
    status = cli("status", "--root", root, "--json")
    assert status.code == 1
    checks = {c["name"]: c for c in status.json["checks"]}
    assert checks["operator"]["ok"] is False and message in checks["operator"]["detail"]
    assert checks["release"]["ok"] is True


def test_threads_precedence_flag_env_file(cli: CLI, installed: tuple[Path, Served]) -> None:
    root, s = installed
    _write(root, "threads = 5\n")
    env = {"HAL0_LEMONADE_THREADS": "4"}

    def threads(*extra: str, env: dict[str, str] | None = None) -> tuple[str, str]:
        run = cli(*install_args(root, s, *extra), env=env)
        assert run.code == 0, run.err
        detail = run.step("Release pin")["detail"]
        return _config(root)["llamacpp"]["args"], detail.split(" from ")[-1]

    assert threads("--threads", "3", env=env) == ("--parallel 1 --threads 3", "--threads")
    assert threads(env=env) == ("--parallel 1 --threads 4", "HAL0_LEMONADE_THREADS")
    assert threads() == ("--parallel 1 --threads 5", "/etc/hal0/lemonade.toml")


def test_config_show_names_the_source_of_every_value(cli: CLI, root: Path) -> None:
    _write(root, '[llamacpp]\nbackend = "cpu"\nextra_args = "--no-mmap"\n')
    run = cli("config", "show", "--root", root, env={"HAL0_LEMONADE_PORT": "13999"})
    assert run.code == 0, run.err
    lines = {line.split()[0]: line for line in run.out.splitlines()[1:]}
    assert run.out.splitlines()[0] == "operator file: /etc/hal0/lemonade.toml (present)"
    assert lines["port"].split()[1:] == ["13999", "HAL0_LEMONADE_PORT"]
    assert lines["llamacpp.backend"].split()[1:] == ["cpu", "/etc/hal0/lemonade.toml"]
    assert lines["max_loaded_models"].split()[1:3] == ["4", "default"]
    assert lines["host"].split()[1:] == ["127.0.0.1", "locked", "by", "hal0"]
    assert "--no-mmap" in lines["llamacpp.args"]
    assert "extra_args from /etc/hal0/lemonade.toml" in lines["llamacpp.args"]

    doc = cli("config", "show", "--root", root, "--json").json
    assert doc["present"] is True
    assert doc["values"]["port"] == {
        "value": 13305,
        "source": "default (set it in /etc/hal0/lemonade.toml)",
    }
    assert doc["values"]["sdcpp.cfg_scale"] == {"value": 7.0, "source": "locked by hal0"}


def test_config_show_without_a_file_says_defaults_apply(cli: CLI, root: Path) -> None:
    run = cli("config", "show", "--root", root)
    assert run.code == 0
    assert run.out.startswith("operator file: /etc/hal0/lemonade.toml (absent: defaults apply)")
