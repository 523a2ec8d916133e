"""What the operator asked for, resolved once into a frozen value.

Precedence: flags > environment > the operator's /etc/hal0/lemonade.toml > pins and defaults.
Everything downstream reads Settings and never looks at flags or the environment again.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hal0_lemonade import cpus as cpu_probe
from hal0_lemonade import opconfig, releases
from hal0_lemonade.errors import UsageError
from hal0_lemonade.layout import Layout
from hal0_lemonade.resources import daemon_config

LISTEN_HOST = "127.0.0.1"  # ADR-0008 §1: loopback only, never exposed off the box
LISTEN_PORT = opconfig.DEFAULT_PORT
START_TIMEOUT_S = 30.0
HEALTH_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Settings:
    layout: Layout
    pin: releases.Pin
    threads: int
    threads_source: str
    cpus: int  # the CPU budget used for CPUQuota (2 when unreadable)
    dry_run: bool
    start: bool
    host: str = LISTEN_HOST
    port: int = LISTEN_PORT
    start_timeout: float = START_TIMEOUT_S
    health_timeout: float = HEALTH_TIMEOUT_S
    warnings: tuple[str, ...] = ()
    port_source: str = "default"
    operator: opconfig.OperatorConfig = field(default_factory=opconfig.none)
    reinstall: bool = False  # re-extract the release even when it looks current

    @property
    def intent(self) -> daemon_config.Intent:
        """What config.json must lock, whatever the release's schema."""
        return daemon_config.Intent(self.threads, self.host, self.port, str(self.layout.models_dir))


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def build(
    *,
    root: Path,
    version: str | None,
    artifact: str | None,
    sha256: str | None,
    threads: int | None,
    dry_run: bool,
    start: bool,
    reinstall: bool = False,
    env: Mapping[str, str] | None = None,
    budget: cpu_probe.CpuBudget | None = None,
) -> Settings:
    env = os.environ if env is None else env
    warnings: list[str] = []
    skip_sha = _truthy(env.get("HAL0_SKIP_LEMONADE_SHA"))
    pin = releases.resolve(version, artifact, sha256, skip_sha=skip_sha)
    if not pin.verified:
        warnings.append(
            f"HAL0_SKIP_LEMONADE_SHA=1: installing Lemonade {pin.version} WITHOUT verifying "
            "its digest; the marker records it as unverified"
        )

    layout = Layout(root)
    operator = opconfig.load(layout)
    env_values = opconfig.from_env(env)
    budget = budget if budget is not None else cpu_probe.detect()
    n, source = resolve_threads(threads, env_values, operator, budget, warnings)
    port = opconfig.resolve_port(env_values, operator)
    return Settings(
        layout=layout,
        pin=pin,
        threads=n,
        threads_source=source,
        cpus=budget.cpus or cpu_probe.FALLBACK_THREADS,
        dry_run=dry_run,
        start=start,
        warnings=tuple(warnings),
        port=port.value,
        port_source=port.source,
        operator=operator,
        reinstall=reinstall,
    )


def resolve_threads(
    flag: int | None,
    env_values: Mapping[str, object],
    operator: opconfig.OperatorConfig,
    budget: cpu_probe.CpuBudget,
    warnings: list[str] | None = None,
) -> tuple[int, str]:
    """llamacpp --threads N: --threads > HAL0_LEMONADE_THREADS > the file > the CPU budget."""
    if flag is not None and flag < cpu_probe.MIN_THREADS:
        raise UsageError(
            f"--threads {flag} is below {cpu_probe.MIN_THREADS}",
            hint="llama.cpp needs --threads 2 or more (ADR-0008 §4)",
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
        env_values=env_values,
        operator=operator,
        default=auto,
        default_source=auto_source,
    )
    if chosen.source == "fallback" and warnings is not None:
        warnings.append(f"{budget.source}; using --threads {auto}")
    return int(chosen.value), chosen.source


def intent_for(
    layout: Layout,
    env: Mapping[str, str] | None = None,
    budget: cpu_probe.CpuBudget | None = None,
) -> tuple[daemon_config.Intent, opconfig.OperatorConfig, str, str]:
    """The config intent without any flag (``rollback``, ``config show``): environment >
    operator file > defaults.  Also the operator file and where threads and port came from."""
    env = os.environ if env is None else env
    operator = opconfig.load(layout)
    env_values = opconfig.from_env(env)
    budget = budget if budget is not None else cpu_probe.detect()
    threads, threads_source = resolve_threads(None, env_values, operator, budget)
    port = opconfig.resolve_port(env_values, operator)
    intent = daemon_config.Intent(threads, LISTEN_HOST, int(port.value), str(layout.models_dir))
    return intent, operator, threads_source, port.source
