"""Session settings: the CPU count the intra-op pool is sized from, and provider selection."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

from clawdbot.inference.exceptions import ModelLoadError
from clawdbot.inference.onnx import RuntimeOptions, available_cpus, default_threads
from clawdbot.inference.onnx.runtime import create_session

if TYPE_CHECKING:
    from pathlib import Path

AFFINITY = len(os.sched_getaffinity(0))


@pytest.mark.parametrize(("files", "expected"), [
    ({}, AFFINITY),  # no cgroup files: the affinity mask
    ({"cpu.max": "max 100000\n"}, AFFINITY),  # v2, unlimited
    ({"cpu.max": "50000 100000\n"}, 1),  # v2, half a CPU rounds up to one
    ({"cpu.max": "100000 100000\n"}, 1),
    ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),  # v1
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, AFFINITY),  # v1, unlimited
])
def test_available_cpus_respects_the_cgroup_quota(tmp_path: Path, files: dict[str, str], expected: int) -> None:
    for name, content in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(content)
    assert available_cpus(tmp_path) == min(expected, AFFINITY)


def test_session_threads_and_cpu_provider(llama_dir: Path) -> None:
    options = RuntimeOptions(threads=1, providers=("CPUExecutionProvider",))
    session, device = create_session(llama_dir / "model.onnx", options)
    assert device == "cpu"
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert session.get_session_options().intra_op_num_threads == 1


def test_unavailable_provider_is_a_load_error(llama_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match="NoSuchExecutionProvider"):
        create_session(llama_dir / "model.onnx", RuntimeOptions(providers=("NoSuchExecutionProvider",)))


def test_default_threads_grow_with_the_model_and_stop_at_the_cpus() -> None:
    mib = 1 << 20
    assert default_threads(18 * mib, cpus=16) == 1  # our shipped model: one thread
    assert default_threads(300 * mib, cpus=16) == 3
    assert default_threads(4096 * mib, cpus=8) == 8
    assert default_threads(4096 * mib, cpus=1) == 1


def test_automatic_threads_for_a_tiny_model(llama_dir: Path) -> None:
    session, _ = create_session(llama_dir / "model.onnx", RuntimeOptions(providers=("CPUExecutionProvider",)))
    assert session.get_session_options().intra_op_num_threads == 1
