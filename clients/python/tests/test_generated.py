"""The committed protobuf modules are what gen.sh makes from the .proto files today."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
COMMITTED = HERE / "src" / "ferry_client" / "pb"


def test_generated_modules_match_the_proto_files(tmp_path: Path) -> None:
    out = tmp_path / "pb"
    subprocess.run(
        ["bash", str(HERE / "gen.sh"), str(out)],
        check=True,
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
    )
    made = sorted(p.name for p in out.iterdir())
    committed = sorted(p.name for p in COMMITTED.iterdir() if p.suffix in (".py", ".pyi"))
    assert made == committed, "gen.sh makes another set of files: run clients/python/gen.sh"
    drifted = [n for n in made if (out / n).read_bytes() != (COMMITTED / n).read_bytes()]
    assert not drifted, f"{drifted} differ from the .proto files: run clients/python/gen.sh"
    assert len(made) == 13  # six .proto files, a module and a stub each, and __init__.py
