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
    for label, src in _cases(big, many):
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


def _cases(big: Path, many: Path) -> list[tuple[str, Path]]:
    return [("1 x big", big), (f"{len(list(many.iterdir()))} x 10 KiB", many)]


def bench_sftp(root: Path, big: Path, many: Path) -> list[tuple[str, float, float]]:
    """Our scp:// (SFTP through paramiko) against OpenSSH's scp, to a private sshd."""
    from backends.transfers import TransferContext, transfer_for
    from edgeceleryapp.settings import SSHCredentials, TransferSettings
    from tests.sshd import start_sshd

    server = start_sshd(root / "sshd", extra_config=("Subsystem sftp internal-sftp",))
    creds = SSHCredentials(
        username="root", key_file=server.client_key, known_hosts=server.known_hosts
    )
    settings = TransferSettings(ssh=creds, hosts=["127.0.0.1"])
    scp = [
        "scp",
        "-q",
        "-r",
        "-P",
        str(server.port),
        "-i",
        str(server.client_key),
        "-o",
        f"UserKnownHostsFile={server.known_hosts}",
        "-o",
        "BatchMode=yes",
    ]
    rows = []
    try:
        for label, src in _cases(big, many):
            dst = root / "out"
            url = f"scp://127.0.0.1:{server.port}{dst}"
            context = TransferContext(roots=[root], settings=settings, token="bench")
            ours = timed(
                lambda s=src, d=dst, u=url, c=context: (fresh(d), transfer_for(u, c).upload(s, u))
            )
            plain = timed(
                lambda s=src, d=dst: (
                    fresh(d),
                    subprocess.run(
                        [*scp, *[str(p) for p in s.iterdir()], f"root@127.0.0.1:{d}/"], check=True
                    ),
                )
            )
            rows.append((f"scp    {label}", ours, plain))
    finally:
        server.stop()
    return rows


def bench_gridftp(root: Path, big: Path, many: Path) -> list[tuple[str, float, float]]:
    """Our gsiftp:// against plain globus-url-copy, to the server scripts/gridftp.sh runs."""
    from backends.transfers import TransferContext, transfer_for
    from edgeceleryapp.settings import TransferSettings

    done = subprocess.run(
        [str(ROOT / "scripts" / "gridftp.sh"), "start"], check=True, capture_output=True, text=True
    )
    env = dict(item.split("=", 1) for item in done.stdout.strip().splitlines()[-1].split()[1:])
    os.environ["X509_CERT_DIR"] = env["X509_CERT_DIR"]
    settings = TransferSettings(x509_proxy=Path(env["X509_USER_PROXY"]), hosts=["127.0.0.1"])
    port = env["EDGECELERY_GRIDFTP_PORT"]
    rows = []
    for label, src in _cases(big, many):
        dst = root / "out"
        url = f"gsiftp://127.0.0.1:{port}{dst}/"
        context = TransferContext(roots=[root], settings=settings, token="bench")
        ours = timed(
            lambda s=src, d=dst, u=url, c=context: (fresh(d), transfer_for(u, c).upload(s, u))
        )
        plain = timed(
            lambda s=src, d=dst, u=url: (
                fresh(d),
                subprocess.run(
                    [
                        "globus-url-copy",
                        "-r",
                        "-cd",
                        "-p",
                        str(settings.gridftp_parallel),
                        f"file://{s}/",
                        u,
                    ],
                    check=True,
                    env={**os.environ, "X509_USER_PROXY": env["X509_USER_PROXY"]},
                ),
            )
        )
        rows.append((f"gsiftp {label}", ours, plain))
    return rows


BENCHES: dict[str, Callable[[Path, Path, Path], list[tuple[str, float, float]]]] = {
    "local": bench_local,
    "sftp": bench_sftp,
    "gridftp": bench_gridftp,
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
