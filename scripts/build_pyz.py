"""Build ``dist/hal0-lemonade.pyz``: the installer as one executable file (see scripts/pyz).

Why the stdlib's zipfile and not shiv or pex: a root installer wants the fewest moving parts.
The pyz holds the package and click as plain source (importable from the zip as it is), plus
zlib-ng's one compiled module per Python and machine; its own ``__main__`` (pyz_main.py)
decides where to import from and unpacks into a root-owned cache only what this interpreter
needs (shiv and pex unpack into the running user's home, and bring a bootstrap of their own).
And with our own writer the file is reproducible to the byte: sorted entries, fixed
timestamps and modes, one compression level, wheels pinned by digest.

    python scripts/build_pyz.py WHEELS_DIR OUTPUT
"""

from __future__ import annotations

import hashlib
import io
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src" / "hal0_lemonade"
SHEBANG = b"#!/usr/bin/env python3\n"
EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest a zip can say: no build time leaks in
# The wheels the pyz is made of, each pinned by its digest (pip checks them on download).
CLICK = "click-8.5.1-py3-none-any.whl"
NATIVE_TAGS = [
    (f"cp3{minor}", machine) for minor in (11, 12, 13) for machine in ("x86_64", "aarch64")
]


def _zlib_ng(tag: str, machine: str) -> str:
    return (
        f"zlib_ng-1.1.0-{tag}-{tag}-manylinux2014_{machine}.manylinux_2_17_{machine}."
        f"manylinux_2_28_{machine}.whl"
    )


def _package() -> Iterator[tuple[str, bytes]]:
    for path in sorted(SRC.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            yield f"hal0_lemonade/{path.relative_to(SRC).as_posix()}", path.read_bytes()


def _wheel(path: Path, keep: str, prefix: str = "") -> Iterator[tuple[str, bytes]]:
    """The members of a wheel under ``keep/`` (its package), renamed under ``prefix``."""
    with zipfile.ZipFile(path) as wheel:
        for name in sorted(wheel.namelist()):
            if name.startswith(keep + "/") and not name.endswith("/"):
                yield prefix + name, wheel.read(name)


def payload(wheels: Path) -> list[tuple[str, bytes]]:
    entries = [*_package(), *_wheel(wheels / CLICK, "click")]
    for tag, machine in NATIVE_TAGS:
        native = f"native/{tag}-{machine}/"
        entries += _wheel(wheels / _zlib_ng(tag, machine), "zlib_ng", native)
    return sorted(entries)


def build(wheels: Path) -> bytes:
    entries = payload(wheels)
    digest = hashlib.sha256()
    for name, data in entries:
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    build_id = digest.hexdigest()[:16]
    main = (HERE / "pyz_main.py").read_text().replace("@BUILD@", build_id).encode()
    out = io.BytesIO()
    out.write(SHEBANG)
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in [("__main__.py", main), *entries]:
            info = zipfile.ZipInfo(name, date_time=EPOCH)
            info.create_system = 3  # unix, whatever builds it
            info.external_attr = 0o100644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data, compresslevel=9)
    return out.getvalue()


def main() -> int:
    wheels, output = Path(sys.argv[1]), Path(sys.argv[2])
    data = build(wheels)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o755)
    tmp.replace(output)
    print(f"{hashlib.sha256(data).hexdigest()}  {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
