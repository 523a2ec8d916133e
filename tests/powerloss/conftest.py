"""The power-loss suite: real installer runs on a loop-mounted ext4 whose power is cut."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.powerloss.disk import LOG, CutUnsupportedError, check_support


def pytest_configure(config: pytest.Config) -> None:
    # Registered here, beside the tests it marks, like the kill-point suite's marker.
    config.addinivalue_line(
        "markers", "powerloss: cuts the power of a loop-mounted ext4 under the installer (root)"
    )


@pytest.fixture(scope="session")
def power(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A work dir on a host where a cut is a real power loss; skipped, with the reason,
    anywhere else (not root, no loop device, no mkfs.ext4, no shutdown ioctl)."""
    work = tmp_path_factory.mktemp("power")
    try:
        check_support(work)
    except CutUnsupportedError as exc:
        pytest.skip(f"power-loss suite: {exc}")
    return work


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    # Each cut has its own label (the kill point, or the run, it follows): one line, the count.
    if LOG.cuts:
        terminalreporter.write_line(f"power-loss suite: {len(LOG.cuts)} power cuts checked")
