"""BENCHMARKS.md, workload 3: a restarting change under booted systemd, with the real lemond."""

from __future__ import annotations

from bench.measure import median
from bench.report_fmt import spread, table, verdict
from bench.results import Action, RestartRun, Results

INSTALL_TARGET_S = 1.5
GAP_TARGET_S = 1.0
CHANGES = ("install --threads 3", "install --threads 2")


def _of(run: RestartRun, *kinds: str) -> list[Action]:
    return [a for a in run.actions if a.kind in kinds]


def _where(run: RestartRun) -> str:
    fstype, _, options = run.where.partition(" ")
    upper = next((o.split("=", 1)[1] for o in options.split(",") if o.startswith("upperdir=")), "")
    if fstype == "overlay" and "nspawn-volatile" in upper:
        return "container: overlayfs, its upper dir on nspawn's tmpfs (`--volatile=overlay`)"
    return f"container: {run.where}"


def summary(res: Results) -> list[list[str]]:
    run = res.restart
    if run is None or not run.actions:
        return []
    changes, restarts = _of(run, *CHANGES), _of(run, "systemctl restart")
    wall = [a.wall for a in changes]
    gap = [a.gap for a in changes]
    where = _where(run).split(":", 1)[0] + ", tmpfs overlay"
    return [
        [
            "3. restarting change (`install --threads 3` / `2`), booted systemd 252, real "
            "lemond: install wall",
            where,
            spread(wall),
            f"<= {INSTALL_TARGET_S} s",
            verdict(median(wall) <= INSTALL_TARGET_S),
        ],
        [
            "3. the same: longest gap in health answers (polled every "
            f"{run.poll_period_ms:.0f} ms inside)",
            where,
            spread(gap),
            f"<= {GAP_TARGET_S} s",
            verdict(median(gap) <= GAP_TARGET_S),
        ],
        [
            "3. baseline: `systemctl restart hal0-lemonade` alone: wall; health gap",
            where,
            f"{spread([a.wall for a in restarts])}; gap {spread([a.gap for a in restarts])}",
            "none (reported)",
            "-",
        ],
    ]


def section(res: Results) -> list[str]:
    run = res.restart
    if run is None or not run.actions:
        return []
    n = len(_of(run, "systemctl restart"))
    rows = []
    for kind in ("install --threads 3", "install --threads 2", "systemctl restart",
                 "install, no change"):  # fmt: skip
        acts = _of(run, kind)
        rows.append(
            [
                f"`{kind}`" if kind.startswith("systemctl") else kind,
                spread([a.wall for a in acts]),
                spread([a.gap for a in acts]),
                spread([a.healthy_after for a in acts]),
                f"{median([float(a.failed_polls) for a in acts]):.0f}",
            ]
        )
    head = ["action", "wall", "longest health gap", "healthy again after", "failed polls"]
    return [
        f"## 3. A restarting change under booted systemd ({n} reps, interleaved)",
        "",
        f"Where: {_where(run)}, booted from the Debian 12 root scripts/e2e-rootfs.sh caches "
        f"({run.systemd}; {run.python}). The harness of the booted suite (tests/e2e/harness.py "
        "`booted`) boots it in systemd-nspawn; the pyz is bound in and installed at "
        "/usr/local/sbin/hal0-lemonade as README says and runs on the root's python3 (its "
        "code cache unpacked by the first install); the real archive is bound in at /real. "
        f"Boot {run.boot_s:.1f} s; the first install of the real 10.6.0 (pyz cold, fetch, "
        f"start, health) {run.first_install_s:.2f} s.",
        "",
        "Then bench/health_poller.py runs inside as a transient unit: a fresh connection and "
        f"`GET /api/v1/health` every {run.poll_period_ms:.0f} ms (a poll gives up after "
        "0.25 s), one line per answer with its CLOCK_MONOTONIC time. Each rep runs the four "
        "actions below in this order, each timed inside the container with the same clock "
        "and started once health answers again plus 0.3 s. `install --threads 3` and `2` "
        "each change the config, so the installer restarts lemond and waits for it to be "
        "active and healthy; `systemctl restart` is the daemon's own restart (it returns "
        "when the unit is active, before lemond answers); the last install changes nothing. "
        "Longest gap: the longest time between two successful answers from the last one "
        "before the action to the first one after it (~20 ms when nothing stops); healthy "
        "again after: from the action's start to the first answer after the last failed "
        "poll.",
        "",
        *table(head, rows),
        "",
        *_reading(run),
    ]


def _reading(run: RestartRun) -> list[str]:
    """What the medians say about the installer's own share of a restarting change."""
    change = median([a.wall for a in _of(run, *CHANGES)])
    restart = median([a.wall for a in _of(run, "systemctl restart")])
    back = median([a.healthy_after for a in _of(run, "systemctl restart")])
    noop = median([a.wall for a in _of(run, "install, no change")])
    return [
        f"Read together: a restarting install takes {change:.2f} s where `systemctl restart` "
        f"returns after {restart:.2f} s and lemond answers again {back:.2f} s after it "
        f"starts; the install's own share is about {change - back:.2f} s (its start-up, the "
        "checks of the six steps, writing the config, and its health wait's polling). A re-run "
        f"that changes nothing takes {noop:.2f} s on this booted host (it also asks systemd "
        "and lemond whether all is well).",
        "",
    ]
