"""What the operator asked an install for, resolved once into a frozen value.

Precedence: flags > environment > the operator's /etc/hal0/lemonade.toml > pins and defaults.
The environment comes already parsed (:mod:`hal0_lemonade.environment`), the operator's file
through the run's host facts; the install's steps read Settings, not flags or variables.
"""

from __future__ import annotations

from typing import NamedTuple

from hal0_lemonade import cpus as cpu_probe
from hal0_lemonade import opconfig, releases
from hal0_lemonade.environment import Environment
from hal0_lemonade.errors import UsageError
from hal0_lemonade.hostfacts import LISTEN_HOST, Host
from hal0_lemonade.layout import Layout
from hal0_lemonade.resources import daemon_config

START_TIMEOUT_S = 30.0
HEALTH_TIMEOUT_S = 30.0


class Request(NamedTuple):
    """The install's own flags (None: not given)."""

    version: str | None = None
    artifact: str | None = None
    sha256: str | None = None
    threads: int | None = None
    start: bool = True
    reinstall: bool = False  # re-extract the release even when it looks current


class Settings(NamedTuple):
    layout: Layout
    pin: releases.Pin
    threads: int
    threads_source: str
    cpus: int  # the CPU budget used for CPUQuota (2 when unreadable)
    start: bool
    port: int
    env: Environment = Environment()
    host: str = LISTEN_HOST
    start_timeout: float = START_TIMEOUT_S
    health_timeout: float = HEALTH_TIMEOUT_S
    warnings: tuple[str, ...] = ()
    operator: opconfig.OperatorConfig = opconfig.none()
    reinstall: bool = False

    @property
    def intent(self) -> daemon_config.Intent:
        """What config.json must lock, whatever the release's schema."""
        return daemon_config.Intent(self.threads, self.host, self.port, str(self.layout.models_dir))


def build(host: Host, request: Request, budget: cpu_probe.CpuBudget | None = None) -> Settings:
    warnings: list[str] = []
    pin = releases.resolve(
        request.version, request.artifact, request.sha256, skip_sha=host.env.skip_sha
    )
    if not pin.verified:
        warnings.append(
            f"HAL0_SKIP_LEMONADE_SHA=1: installing Lemonade {pin.version} WITHOUT verifying "
            "its digest; the marker records it as unverified"
        )
    budget = budget if budget is not None else cpu_probe.detect()
    n, source = resolve_threads(request.threads, host.env, host.operator, budget, warnings)
    return Settings(
        layout=host.layout,
        pin=pin,
        threads=n,
        threads_source=source,
        cpus=budget.cpus or cpu_probe.FALLBACK_THREADS,
        start=request.start,
        port=int(host.port.value),
        env=host.env,
        warnings=tuple(warnings),
        operator=host.operator,
        reinstall=request.reinstall,
    )


def resolve_threads(
    flag: int | None,
    env: Environment,
    operator: opconfig.OperatorConfig,
    budget: cpu_probe.CpuBudget,
    warnings: list[str] | None = None,
) -> tuple[int, str]:
    """llamacpp --threads N: --threads > HAL0_LEMONADE_THREADS > the file > the CPU budget."""
    if flag is not None and flag < cpu_probe.MIN_THREADS:
        raise UsageError(
            f"--threads {flag} is below {cpu_probe.MIN_THREADS}",
            hint="llama.cpp needs --threads 2 or more: with fewer, concurrent llama-server "
            "children starve each other",
        )
    if budget.cpus is None:
        auto, auto_source = cpu_probe.FALLBACK_THREADS, "fallback"
    else:
        auto = cpu_probe.threads_for(budget.cpus)
        auto_source = f"{budget.cpus} CPUs ({budget.source})"
    chosen = opconfig.resolve(
        "threads",
        flag=flag,
        flag_name="--threads",
        env_values=env.overrides,
        operator=operator,
        default=auto,
        default_source=auto_source,
    )
    if chosen.source == "fallback" and warnings is not None:
        warnings.append(f"{budget.source}; using --threads {auto}")
    return int(chosen.value), chosen.source


def intent_for(
    host: Host, budget: cpu_probe.CpuBudget | None = None
) -> tuple[daemon_config.Intent, str]:
    """The config intent without flags (``rollback``, ``config show``): environment >
    operator file > defaults; also where the thread count came from."""
    budget = budget if budget is not None else cpu_probe.detect()
    threads, threads_source = resolve_threads(None, host.env, host.operator, budget)
    port = int(host.port.value)
    intent = daemon_config.Intent(threads, LISTEN_HOST, port, str(host.layout.models_dir))
    return intent, threads_source
