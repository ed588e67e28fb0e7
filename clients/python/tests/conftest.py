from __future__ import annotations

from pathlib import Path
from typing import AsyncIterator, Iterator

import pytest

from ferry_client import Connection
from support import Node


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    """A ferryd with its defaults (the test program on), TCP and unix socket."""
    n = Node(tmp_path / "node")
    yield n
    n.stop()


@pytest.fixture
async def conn(node: Node) -> AsyncIterator[Connection]:
    """An admin connection over the node's unix socket."""
    c = await node.connect()
    yield c
    await c.aclose()
