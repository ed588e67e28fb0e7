#!/usr/bin/env python3
"""Upload and download of one file through ferry_client and through `ferry vol upload/download`,
against the same ferryd in the same run; prints JSON: MB/s and client CPU seconds per GB for
each, and the Python/ferry ratios. The clients take turns going first in each round, and each
download is checked against the source's BLAKE3 and removed before the other client's.

    python bench.py [--size 1GiB] [--rounds 2] [--ferryd PATH] [--ferry PATH] [--dir DIR]

Binaries default to $FERRYD / $FERRY, else the workspace's release build
(CARGO_TARGET_DIR or target/release). Both clients verify with BLAKE3 (ferry's default) and
write the download to a temporary file that they sync and rename. The node runs on a temporary
data dir in DIR; both clients talk to it over its unix socket.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "src"))

import ferry_client as fc  # noqa: E402

REPO = HERE.parents[1]


def release_binary(env: str, name: str) -> str:
    if os.environ.get(env):
        return os.environ[env]
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    return str(target / "release" / name)


def size_arg(text: str) -> int:
    units = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
    for unit, factor in units.items():
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(text)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Daemon:
    def __init__(self, ferryd: str, root: Path) -> None:
        self.proc = subprocess.Popen(
            [ferryd, "--data-dir", str(root / "data"), "--tcp", "", "--metrics", ""],
            stdout=subprocess.PIPE,
            stderr=open(root / "ferryd.log", "wb"),
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if not line.startswith("ferryd ready:"):
            raise RuntimeError(f"ferryd did not start: {line!r}")
        fields = dict(p.split("=", 1) for p in line.split()[2:])
        self.uri = "unix://" + fields["unix"]

    def cpu(self) -> float:
        return proc_cpu(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def measure(size: int, daemon: Daemon, run: Any) -> dict[str, float]:
    """Runs `run()` (returns the client CPU seconds it used) and times it."""
    server_before = daemon.cpu()
    started = time.perf_counter()
    client_cpu = run()
    took = time.perf_counter() - started
    gb = size / 1e9
    return {
        "seconds": round(took, 3),
        "MB_per_s": round(size / 1e6 / took, 1),
        "client_cpu_s_per_GB": round(client_cpu / gb, 3),
        "server_cpu_s_per_GB": round((daemon.cpu() - server_before) / gb, 3),
    }


def ferry_cmd(ferry: str, uri: str, *args: str) -> float:
    before = children_cpu()
    subprocess.run([ferry, "-c", uri, "--json", *args], check=True, stdout=subprocess.DEVNULL)
    return children_cpu() - before


def python_run(coro_fn: Any) -> float:
    before = time.process_time()
    asyncio.run(coro_fn())
    return time.process_time() - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=size_arg, default=1 << 30)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--ferryd", default=release_binary("FERRYD", "ferryd"))
    parser.add_argument("--ferry", default=release_binary("FERRY", "ferry"))
    parser.add_argument("--dir", default=None, help="where the file and the node's data go")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="ferry-bench-") as tmp:
        root = Path(tmp)
        source = root / "source.bin"
        with open(source, "wb") as f:
            block = os.urandom(1 << 20)
            for i in range(args.size // len(block)):
                f.write(block[i % 251 :] + block[: i % 251])
            f.write(block[: args.size % len(block)])
        expected = fc.file_checksum(source)
        daemon = Daemon(args.ferryd, root)
        results: dict[str, list[dict[str, float]]] = {
            "ferry_upload": [], "python_upload": [], "ferry_download": [], "python_download": [],
        }
        try:
            for r in range(args.rounds):
                # The two clients take turns going first: what runs second here pays for what
                # the first left behind (page cache to reclaim; up to 2x the kernel time).
                first, second = ("ferry", "python") if r % 2 == 0 else ("python", "ferry")

                async def py_upload() -> None:
                    async with await fc.connect(daemon.uri) as conn:
                        await fc.VolumeClient(conn).upload(f"p{r}", source, verify=True)

                out = {"ferry": root / f"out-f{r}", "python": root / f"out-p{r}"}

                async def py_download() -> None:
                    async with await fc.connect(daemon.uri) as conn:
                        await fc.VolumeClient(conn).download(f"p{r}", out["python"], verify=True)

                runs: dict[str, Callable[[], float]] = {
                    "ferry_upload": lambda: ferry_cmd(
                        args.ferry, daemon.uri, "vol", "upload", str(source), f"f{r}"),
                    "python_upload": lambda: python_run(py_upload),
                    "ferry_download": lambda: ferry_cmd(
                        args.ferry, daemon.uri, "vol", "download", f"f{r}", str(out["ferry"])),
                    "python_download": lambda: python_run(py_download),
                }
                for op in ("upload", "download"):
                    for client in (first, second):
                        results[f"{client}_{op}"].append(measure(args.size, daemon, runs[f"{client}_{op}"]))
                        if op == "download":
                            # Checked and removed before the other client runs.
                            if fc.file_checksum(out[client]) != expected:
                                raise RuntimeError(f"{client}'s download differs from the source")
                            out[client].unlink()

                async def cleanup() -> None:
                    async with await fc.connect(daemon.uri) as conn:
                        volumes = fc.VolumeClient(conn)
                        await volumes.delete(f"f{r}")
                        await volumes.delete(f"p{r}")

                asyncio.run(cleanup())
        finally:
            daemon.stop()

    def best(name: str) -> dict[str, float]:
        return max(results[name], key=lambda m: m["MB_per_s"])

    summary: dict[str, Any] = {
        "size_bytes": args.size,
        "rounds": args.rounds,
        "ferryd": args.ferryd,
        "ferry": args.ferry,
        "python": sys.version.split()[0],
        "best": {name: best(name) for name in results},
        "all": results,
    }
    for op in ("upload", "download"):
        py, rs = best(f"python_{op}"), best(f"ferry_{op}")
        summary[f"{op}_ratio_python_vs_ferry"] = round(py["MB_per_s"] / rs["MB_per_s"], 3)
        summary[f"{op}_cpu_ratio_python_vs_ferry"] = round(
            py["client_cpu_s_per_GB"] / max(rs["client_cpu_s_per_GB"], 1e-9), 3
        )
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
