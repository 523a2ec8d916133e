"""The operator file's schema and the precedence rule, as pure functions."""

from __future__ import annotations

import pytest

from hal0_lemonade import opconfig
from hal0_lemonade.errors import UsageError
from hal0_lemonade.resources import daemon_config


def test_a_full_valid_file_parses_to_dotted_keys() -> None:
    values = opconfig.parse(
        "port = 13400\nthreads = 6\nmax_loaded_models = 2\nctx_size = 8192\n"
        'global_timeout = 600\n[llamacpp]\nbackend = "vulkan"\nextra_args = "--no-mmap"\n'
    )
    assert values == {
        "port": 13400,
        "threads": 6,
        "max_loaded_models": 2,
        "ctx_size": 8192,
        "global_timeout": 600,
        "llamacpp.backend": "vulkan",
        "llamacpp.extra_args": "--no-mmap",
    }


@pytest.mark.parametrize(
    ("text", "message", "hint"),
    [
        ("max_loaded_model = 2", "'max_loaded_model' is not a known key", "did you mean"),
        ("[llamacpp]\nbakend = 'rocm'", "'llamacpp.bakend' is not a known key", "backend"),
        ("colour = 'red'", "'colour' is not a known key", "known keys: port"),
        ("host = '0.0.0.0'", "host is locked by hal0", "loopback"),
        ("[llamacpp]\nargs = '--foo'", "llamacpp.args is locked by hal0", "extra_args"),
        ("port = 80", "port must be between 1024 and 65535", "port"),
        ("port = '13305'", "port must be an integer, not str", ""),
        ("threads = 1", "threads must be between 2 and", "--threads"),
        ("max_loaded_models = true", "must be an integer, not bool", ""),
        ("[llamacpp]\nbackend = 'cuda'", "must be one of rocm, vulkan, cpu", ""),
        ("[llamacpp]\nextra_args = '--threads 8'", "may not contain --threads", ""),
        ("[llamacpp]\nextra_args = ['-t', '8']", "may not contain -t", ""),
        ("[llamacpp]\nextra_args = '--parallel=4'", "may not contain --parallel", ""),
        ("[llamacpp]\nextra_args = '-np 2'", "may not contain -np", ""),
        ("[llamacpp]\nextra_args = 3", "must be a string or a list of strings", ""),
        ("[llamacpp]\nextra_args = '--x \"unclosed'", "cannot be split", ""),
        ("port = ", "is not valid TOML", "fix the syntax"),
    ],
)
def test_bad_files_are_refused_by_name(text: str, message: str, hint: str) -> None:
    with pytest.raises(UsageError) as info:
        opconfig.parse(text, "/etc/hal0/lemonade.toml")
    assert info.value.exit_code == 2
    assert info.value.message.startswith("/etc/hal0/lemonade.toml")
    assert message in info.value.message
    assert hint in info.value.hint


def test_threads_batch_is_not_the_threads_invariant() -> None:
    values = opconfig.parse("[llamacpp]\nextra_args = ['--threads-batch', '4', '--no-mmap']")
    cfg = opconfig.OperatorConfig(None, True, values)
    assert cfg.extra_args() == "--threads-batch 4 --no-mmap"


def test_environment_values_are_validated_like_the_file() -> None:
    assert opconfig.from_env({"HAL0_LEMONADE_PORT": "13400", "HAL0_LEMONADE_THREADS": ""}) == {
        "port": 13400
    }
    with pytest.raises(UsageError, match="HAL0_LEMONADE_THREADS='1'"):
        opconfig.from_env({"HAL0_LEMONADE_THREADS": "1"})
    with pytest.raises(UsageError, match="must be an integer"):
        opconfig.from_env({"HAL0_LEMONADE_PORT": "high"})


@pytest.mark.parametrize(
    ("flag", "env", "file", "expected"),
    [
        (7, {"threads": 6}, {"threads": 5}, (7, "--threads")),
        (None, {"threads": 6}, {"threads": 5}, (6, "HAL0_LEMONADE_THREADS")),
        (None, {}, {"threads": 5}, (5, "/etc/hal0/lemonade.toml")),
        (None, {}, {}, (3, "default")),
    ],
)
def test_precedence_is_flag_env_file_default(
    flag: int | None, env: dict[str, int], file: dict[str, int], expected: tuple[int, str]
) -> None:
    operator = opconfig.OperatorConfig(None, bool(file), dict(file))
    got = opconfig.resolve(
        "threads", flag=flag, flag_name="--threads", env_values=env, operator=operator, default=3
    )
    assert (got.value, got.source) == expected


def test_operator_keys_are_laid_over_the_baseline_and_args_appended() -> None:
    values = opconfig.parse(
        'max_loaded_models = 2\n[llamacpp]\nbackend = "vulkan"\nextra_args = "--no-mmap"\n'
    )
    locked = daemon_config.baseline(threads=3, host="127.0.0.1", port=13305, models_dir="/m")
    desired = daemon_config.with_operator(locked, opconfig.OperatorConfig(None, True, values))
    assert desired["max_loaded_models"] == 2
    assert desired["llamacpp"] == {
        "args": "--parallel 1 --threads 3 --no-mmap",
        "backend": "vulkan",
        "prefer_system": False,
    }
    assert locked["llamacpp"]["args"] == "--parallel 1 --threads 3", "baseline not mutated"
