"""Pack what the GPU path needs onto the lent GPU machine in one device-tool call: ``.gpu/site.tar.xz``.

The machine (Python 3.12, CUDA, CuPy, numpy, pandas, pyarrow, scipy) lacks xgboost and five
packages the app's scoring imports. xgboost's manylinux wheel is 131 MB, over the tool's 64 MiB, and
most of it is CUDA machine code for seven GPU generations. This keeps the cubins for ``--arch`` (90:
H100 and H200) and zeroes the others' bytes in place (headers untouched, so the fatbin still parses
and the loader picks the matching cubin); zeros compress to nothing: 25 MB packed. Session 38 ran
``docs/bench/gpu-s38.sh`` with it on an H200. Needs pip, network and ~3 minutes (xz -9e):

    .venv/bin/python docs/bench/gpu_site.py   # then: echo /.gpu/ >> .git/info/exclude

and in the device call: carry [".gpu", "models/<version>"], then
``mkdir -p /tmp/site && tar xJf .gpu/site.tar.xz -C /tmp/site && export PYTHONPATH=/tmp/site:$PWD``.
"""
# ruff: noqa: T201 - a one-off packing script: prints its progress

from __future__ import annotations

import argparse
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEELS = ("xgboost==3.2.0", "orjson==3.13.0", "pydantic==2.14.3", "pydantic-core==2.50.4",
          "annotated-types==0.8.0", "typing-inspection==0.4.5", "typing-extensions==4.16.0")  # fmt: skip
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
FATBIN_MAGIC = 0xBA55ED50


def section(elf: bytes | bytearray, name: str) -> tuple[int, int]:
    """(file offset, size) of an ELF64 section by name."""
    shoff = struct.unpack_from("<Q", elf, 0x28)[0]
    entsize, count, names_index = struct.unpack_from("<HHH", elf, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", elf, shoff + i * entsize) for i in range(count)]
    names_offset = headers[names_index][4]
    for name_at, _type, _flags, _addr, offset, size in headers:
        start = names_offset + name_at
        if elf[start : elf.index(b"\0", start)].decode() == name:
            return offset, size
    raise SystemExit(f"no {name} section")


def keep_arch(elf: bytearray, arch: int) -> tuple[int, int]:
    """Zero the payload of every fatbin entry not built for ``arch``; (bytes kept, bytes zeroed)."""
    offset, size = section(elf, ".nv_fatbin")
    pos, end, kept, zeroed = offset, offset + size, 0, 0
    while pos < end:
        if struct.unpack_from("<I", elf, pos)[0] != FATBIN_MAGIC:
            pos += 8  # containers are 8-byte aligned
            continue
        _magic, _version, header, length = struct.unpack_from("<IHHQ", elf, pos)
        entry, container_end = pos + header, pos + header + length
        while entry < container_end:
            _kind, _unknown, entry_header, payload = struct.unpack_from("<HHIQ", elf, entry)
            if struct.unpack_from("<I", elf, entry + 28)[0] == arch:
                kept += payload
            else:
                elf[entry + entry_header : entry + entry_header + payload] = bytes(payload)
                zeroed += payload
            entry += entry_header + payload
        pos = container_end
    return kept, zeroed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="the GPU's SM version to keep (90: H100, H200)")
    parser.add_argument("--out", type=Path, default=Path(".gpu/site.tar.xz"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wheels, site = Path(tmp, "wheels"), Path(tmp, "site")
        pip = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
        target = ["--python-version=3.12", "--implementation=cp", *(f"--platform={p}" for p in PLATFORMS)]
        subprocess.run([*pip, *target, "-d", str(wheels), *WHEELS], check=True)
        for wheel in sorted(wheels.glob("*.whl")):
            with zipfile.ZipFile(wheel) as z:
                z.extractall(site)
        lib = site / "xgboost" / "lib" / "libxgboost.so"
        elf = bytearray(lib.read_bytes())
        kept, zeroed = keep_arch(elf, args.arch)
        lib.write_bytes(elf)
        lib.chmod(0o755)
        print(f"libxgboost.so: kept {kept / 1e6:.1f} MB of sm_{args.arch} code, zeroed {zeroed / 1e6:.1f} MB")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("wb") as out:
            tar = subprocess.Popen(["tar", "cf", "-", "-C", str(site), "."], stdout=subprocess.PIPE)
            subprocess.run(["xz", "-9e", "-T2"], stdin=tar.stdout, stdout=out, check=True)
            tar.wait()
    print(f"{args.out}: {args.out.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
