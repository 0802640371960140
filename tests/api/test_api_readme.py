"""The README's Python examples, run as a reader would paste them, against ``clawdbot serve``: they must not rot."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.api.conftest import LiveServer

REPO = Path(__file__).resolve().parents[2]
#: The address the README's examples use: ``make serve``'s default.
README_URL = "http://127.0.0.1:8000/v1"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(encoding="utf-8"), flags=re.DOTALL)


def test_the_readme_examples_run_in_order(live_server: LiveServer) -> None:
    blocks = python_blocks()
    assert len(blocks) >= 2 and README_URL in blocks[0]  # the quick start makes the client the others use
    script = "\n".join(blocks).replace(README_URL, live_server.v1)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    # two replies from the quick start (sampled: any text), then a line per token of the log-probabilities example
    # (greedy, max_tokens=6): the token, its log probability, the two likeliest tokens
    token_line = re.compile(r"""(['"]).*\1 -?\d+(\.\d+)? \[.*\]""")
    assert len([line for line in done.stdout.splitlines() if token_line.fullmatch(line)]) == 6, done.stdout
