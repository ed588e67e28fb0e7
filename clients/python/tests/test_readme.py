"""Every ```python block of README.md runs as written against a real node."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from support import Node, hash_password
from test_security import make_pki

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_the_readme_has_examples() -> None:
    assert len(BLOCKS) >= 6


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    root = tmp_path_factory.mktemp("readme")
    ca, cert, key = make_pki(root, "readme")
    config = (
        f'[security]\ntls = "127.0.0.1:0"\ntls_cert = "{cert}"\ntls_key = "{key}"\n\n'
        + hash_password("alice", "wonderland", "read-write")
    )
    node = Node(root / "node", config)
    yield {
        "FERRY_URI": node.unix_uri,
        "FERRY_TLS_URI": f"tls://localhost:{node.tls_port}",
        "FERRY_CA": str(ca),
        "FERRY_USER": "alice",
        "FERRY_PASSWORD": "wonderland",
    }
    node.stop()


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index: int, nodes: dict[str, str], tmp_path: Path) -> None:
    script = tmp_path / f"example{index}.py"
    script.write_text(BLOCKS[index])
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, **nodes, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip(), "every example prints something"
