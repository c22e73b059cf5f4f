"""Transfer plug-ins against the plain tools, over loopback, in one run: ratios.

For each plug-in available here: 1 x 1 GiB and N x 10 KiB, both directions where the plug-in
supports them, timed against the tool an operator would use by hand (cp, scp, globus-url-copy)
on the same data in the same run. The machine is shared and noisy: read the ratios, not the
seconds.

    .venv/bin/python bench/transfer.py [--big-mib 1024] [--small 10000] [--only local,sftp]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_data(root: Path, big_mib: int, small: int) -> tuple[Path, Path]:
    big, many = root / "big", root / "many"
    big.mkdir(parents=True)
    many.mkdir(parents=True)
    block = os.urandom(1 << 20)
    with (big / "big.dat").open("wb") as fh:
        for i in range(big_mib):
            fh.write(i.to_bytes(8, "big") + block[8:])
    payload = os.urandom(10 << 10)
    for i in range(small):
        (many / f"f{i:05d}.dat").write_bytes(payload)
    return big, many


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def bench_local(root: Path, big: Path, many: Path) -> list[tuple[str, float, float]]:
    from backends.transfers import TransferContext, transfer_for

    rows = []
    for label, src in (("1 x big", big), (f"{len(list(many.iterdir()))} x 10 KiB", many)):
        dst = root / "out"
        context = TransferContext(roots=[root], token="bench")
        ours = timed(
            lambda s=src, d=dst, c=context: transfer_for(f"local://{d}", c).upload(
                s, f"local://{fresh(d)}"
            )
        )
        plain = timed(
            lambda s=src, d=dst: subprocess.run(["cp", "-r", f"{s}/.", str(fresh(d))], check=True)
        )
        rows.append((f"local  {label}", ours, plain))
    return rows


BENCHES: dict[str, Callable[[Path, Path, Path], list[tuple[str, float, float]]]] = {
    "local": bench_local,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big-mib", type=int, default=1024)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--only", default=",".join(BENCHES))
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="edgecelery-xfer-"))
    try:
        big, many = make_data(root / "data", args.big_mib, args.small)
        print(f"{'case':<32} {'plug-in s':>10} {'plain s':>9} {'ratio':>7}")
        for name in args.only.split(","):
            for label, ours, plain in BENCHES[name](root, big, many):
                print(f"{label:<32} {ours:>10.2f} {plain:>9.2f} {ours / plain:>7.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
