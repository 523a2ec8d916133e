"""The member policy decides and words every refusal; the stdlib's data filter only backs it up.

Run on every interpreter with a stand-in for ``tarfile.data_filter``, so the ordering and the
wording are checked on 3.11.2 too, which has no filter of its own.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from hal0_lemonade.archive_policy import FileRecord, Limits, Policy
from hal0_lemonade.errors import ArchiveError

TOP = "lemonade-embeddable-10.7.0-ubuntu-x64"


def _info(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, linkname, 0o644
    return info


class _Filter:
    """A data filter that records what it is shown and refuses it as ``refusal`` would."""

    def __init__(self, refusal: Callable[[str, str], Exception] | None) -> None:
        self.refusal = refusal
        self.seen: list[tuple[str, str, str]] = []

    def __call__(self, member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
        self.seen.append((member.name, member.linkname, dest))
        if self.refusal is not None:
            raise self.refusal(member.name, dest)
        return member


@pytest.fixture
def filter_error(monkeypatch: pytest.MonkeyPatch) -> type[Exception]:
    """tarfile.FilterError, or a stand-in where the interpreter predates it (3.11.2)."""
    if not hasattr(tarfile, "FilterError"):
        monkeypatch.setattr(tarfile, "FilterError", type("FilterError", (Exception,), {}),
                            raising=False)  # fmt: skip
    base: type[Exception] = tarfile.FilterError
    return base


def _refusal(base: type[Exception], name: str) -> Callable[[str, str], Exception]:
    cls = type(name, (base,), {})
    # The stdlib's own wording names the host path the tree is extracted to.
    return lambda member, dest: cls(f"{member!r} would link to {dest + '/../etc'!r}")


def _policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake: _Filter) -> Policy:
    monkeypatch.setattr(tarfile, "data_filter", fake, raising=False)
    policy = Policy(tmp_path, Limits())
    policy.admit(_info(TOP, tarfile.DIRTYPE))
    policy.admit(_info(f"{TOP}/lemond"))
    policy.out.files["lemond"] = FileRecord(0, "0" * 64, 0o755)  # as archive.extract does
    return policy


@pytest.mark.parametrize(
    ("member", "expect"),
    [
        (_info(f"{TOP}/pipe", tarfile.FIFOTYPE), "fifo member"),
        (_info(f"{TOP}/up", tarfile.SYMTYPE, "../.."), "symlink escapes the release tree"),
        (_info(f"{TOP}/pw", tarfile.LNKTYPE, "/etc/passwd"), "hard link leaves the release tree"),
        (_info(f"{TOP}/lemond/x"), "path goes through a file"),
    ],
)
def test_our_checks_run_first_and_word_the_refusal(
    member: tarfile.TarInfo, expect: str, filter_error: type[Exception],
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    fake = _Filter(_refusal(filter_error, "SpecialFileError"))
    policy = _policy(tmp_path, monkeypatch, _Filter(None))
    monkeypatch.setattr(tarfile, "data_filter", fake)
    with pytest.raises(ArchiveError) as refused:
        policy.admit(member)
    assert refused.value.message.startswith(f"refusing archive member {member.name!r}: {expect}")
    assert fake.seen == []  # our refusal came before the backstop was asked


@pytest.mark.parametrize(
    ("error", "why"),
    [
        ("LinkOutsideDestinationError", "a link that leads outside the release tree"),
        ("AbsolutePathError", "an absolute path"),
        ("SomeFutureFilterError", "SomeFutureFilterError"),
    ],
)
def test_a_backstop_refusal_is_worded_here_without_the_host_path(
    error: str, why: str, filter_error: type[Exception], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    fake = _Filter(_refusal(filter_error, error))
    policy = _policy(tmp_path, monkeypatch, _Filter(None))
    monkeypatch.setattr(tarfile, "data_filter", fake)
    with pytest.raises(ArchiveError) as refused:
        policy.admit(_info(f"{TOP}/./resources//x", tarfile.SYMTYPE, "../lemond"))
    assert refused.value.message == (
        f"refusing archive member '{TOP}/./resources//x': "
        f"the stdlib data filter rejects it as {why}"
    )
    assert str(tmp_path) not in refused.value.message
    assert fake.seen == [("resources/x", "../lemond", str(tmp_path))]


def test_the_backstop_sees_members_as_extracted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = _Filter(None)
    policy = _policy(tmp_path, monkeypatch, fake)
    policy.admit(_info(f"{TOP}/bin/lemond2", tarfile.LNKTYPE, f"{TOP}/lemond"))
    # Below the top directory, and a hard link's target too: the names the tree gets.
    assert fake.seen[-1] == ("bin/lemond2", "lemond", str(tmp_path))
