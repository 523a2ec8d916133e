"""README's ``python -m bench``, one rep of each workload on the plain disk, so that a change
cannot break it unnoticed (the full run takes ~8 minutes and is run by hand).  This checks
that it runs and writes its report, never how fast anything was: speed lives in
BENCHMARKS.md, as ratios."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from bench.run import find_real, real_dir

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the bench needs root (useradd)")


def test_the_bench_runs_every_workload_once_and_writes_the_report(tmp_path: Path) -> None:
    report = tmp_path / "BENCHMARKS.md"
    workloads = "real,pyz,restart,data,noop"  # every one the bench has
    argv = [sys.executable, "-m", "bench", "--only", workloads, "--fs", "plain", "--reps", "1"]
    done = subprocess.run(
        [*argv, "--output", str(report)],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = report.read_text()
    has_real = find_real(real_dir(None))[0] is not None  # where the bench itself looks
    assert "## Results against the targets (issue 17)" in text
    lines = text.splitlines()
    real_rows = [line for line in lines if line.startswith("| 1. real archive, whole install")]
    assert len(real_rows) == (1 if has_real else 0), real_rows
    # The pyz installs the real archive; the restart workload runs the real lemond under
    # booted systemd.
    pyz = [line for line in lines if line.startswith("| 2. ")]
    assert len(pyz) == (1 if has_real else 0), pyz
    restart = [line for line in lines if line.startswith("| 3. ")]
    assert len(restart) == (3 if has_real else 0), restart
    assert len([line for line in lines if line.startswith("| 4. 200 MB data path")]) == 1
    # A no-op re-run on the real release's root (with the real archive) and on the 200 MB one.
    rows = [line for line in lines if line.startswith("| 5. no-op re-run")]
    assert len(rows) == (2 if has_real else 1), rows
    assert all(re.search(r"; 0 of \d+ inodes changed;", row) for row in rows), rows
    if shutil.which("strace"):  # optional for the bench; scripts/test installs it
        assert all("0 file writes, 0 metadata changes, 0 syncs" in row for row in rows), rows
