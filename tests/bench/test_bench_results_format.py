"""The committed benchmark results are flat: one key per figure, its value a number, a string or a list of them,
so a results file diffs line by line and any figure is one lookup (``jq .overhead_p50_ms``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"
SCALARS = (str, int, float, bool, type(None))


def _nested(results: dict[str, object]) -> dict[str, str]:
    return {key: type(value).__name__ for key, value in results.items()
            if not isinstance(value, SCALARS)
            and not (isinstance(value, list) and all(isinstance(item, SCALARS) for item in value))}


@pytest.mark.parametrize("path", sorted(RESULTS.glob("*.json")), ids=lambda p: p.name)
def test_every_results_file_is_flat(path: Path) -> None:
    results = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(results, dict) and results
    assert _nested(results) == {}


def test_the_check_sees_nesting() -> None:
    assert _nested({"a_ms": 1.0, "b": ["x", 2], "c": {"d": 1}, "e": [{"f": 1}]}) == {"c": "dict", "e": "list"}
