"""Creating the ONNX Runtime session: execution provider and thread settings.

One session is created per process and shared by every request (``InferenceSession.run`` is thread-safe), so
these settings are decided once:

- **Provider**: CUDA when the installed build has it (onnxruntime-gpu) and a GPU answers, else CPU. A CUDA build
  on a machine without a GPU falls back to CPU instead of failing.
- **Threads**: ONNX Runtime sizes its pool from the host's cores, which inside a container limited with
  ``--cpus`` (or a Lambda function) oversubscribes the CPU quota; we never go past the affinity mask capped by
  the cgroup quota. Within that, small models get fewer threads: a decode step of a small model is a chain of
  tiny matrix-vector products (tens of microseconds each), where waking and synchronising pool threads costs
  about as much as it saves, and spinning pool threads compete with other work on a shared host (measured on
  our 4.5M-parameter model on a busy 2-core machine: 1 thread ~3x the tokens/s of 2). One more thread per
  ``WEIGHT_BYTES_PER_THREAD`` of weights. One inter-op thread and sequential execution: a decoder graph is a
  chain, parallel branch execution only adds scheduling overhead.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from clawdbot.config.settings import DEFAULT_PREFIX_CACHE_MB
from clawdbot.inference.exceptions import ModelLoadError

if TYPE_CHECKING:
    import onnxruntime as ort

logger = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
#: Weights per intra-op thread when the thread count is automatic (see the module docstring).
WEIGHT_BYTES_PER_THREAD = 128 << 20


@dataclass(frozen=True, slots=True)
class RuntimeOptions:
    """How to run the graph. ``None`` means "decide from the machine"."""

    #: Intra-op threads; default: one per ``WEIGHT_BYTES_PER_THREAD`` of weights, at most the usable CPUs.
    threads: int | None = None
    #: Execution providers in priority order; default: CUDA if usable, then CPU.
    providers: tuple[str, ...] | None = None
    #: Let idle pool threads spin between ops: lower latency, but burns the CPU share on shared hosts.
    allow_spinning: bool = True
    #: Run the LM head on the last position only (see ``graph_rewrite``); off to get every position's logits.
    last_position_logits: bool = True
    #: Feed a fused-attention graph its lengths directly instead of deriving them from the mask per step.
    direct_attention_lengths: bool = True
    #: Bytes of finished runs' KV caches kept for prompts that start with their ids (``prefix_cache``); 0: none.
    prefix_cache_bytes: int = DEFAULT_PREFIX_CACHE_MB << 20
    #: Generations run at once (prefill and decode loop); more wait their turn. Default: :func:`default_generations`.
    max_generations: int | None = None


def available_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may really use: its affinity mask, capped by a cgroup v2/v1 CPU quota."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        count = os.cpu_count() or 1
    quota: float | None = None
    try:
        raw_quota, raw_period = (cgroup_root / "cpu.max").read_text().split()[:2]
        quota = None if raw_quota == "max" else int(raw_quota) / int(raw_period)
    except (OSError, ValueError):
        try:
            quota_us = int((cgroup_root / "cpu" / "cpu.cfs_quota_us").read_text())
            period_us = int((cgroup_root / "cpu" / "cpu.cfs_period_us").read_text())
            quota = quota_us / period_us if quota_us > 0 and period_us > 0 else None
        except (OSError, ValueError):
            quota = None
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)


#: Fewest generations run at once by default: one is always between graph runs (sampling, the hand-off, HTTP in
#: Python) while another runs the graph.
MIN_GENERATIONS = 2


def default_generations(cpus: int | None = None) -> int:
    """Generations to run at once: one per usable CPU, at least :data:`MIN_GENERATIONS`.

    Past that, generations only contend: each step's Python holds the GIL, the graph's threads share the cores, and
    every switch runs cache-cold. ``bench.throughput`` with the shipped model on 2 CPUs: 16 sessions at once gave
    78-80 turns/s with every turn generating at once and 95-100 with two at a time, 64 sessions 75-76 and 86-97.
    """
    return max(MIN_GENERATIONS, cpus if cpus is not None else available_cpus())


def default_threads(weights_bytes: int, cpus: int | None = None) -> int:
    """Intra-op threads for a model of ``weights_bytes``: 1 for small models, never more than the CPUs."""
    return max(1, min(cpus or available_cpus(), 1 + weights_bytes // WEIGHT_BYTES_PER_THREAD))


def create_session(graph_path: Path, options: RuntimeOptions | None = None, *,
                   graph_bytes: bytes | None = None) -> tuple[ort.InferenceSession, str]:
    """Open ``graph_path`` (or ``graph_bytes``, a rewritten copy of it); returns the session and the device its
    KV cache should live on (``cpu``/``cuda``)."""
    import onnxruntime as ort

    options = options or RuntimeOptions()
    session_options = ort.SessionOptions()
    session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session_options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session_options.intra_op_num_threads = options.threads or default_threads(_weights_bytes(graph_path))
    session_options.inter_op_num_threads = 1
    session_options.log_severity_level = 3  # errors only: ORT's warnings about unused initializers are noise
    if not options.allow_spinning:
        session_options.add_session_config_entry("session.intra_op.allow_spinning", "0")

    available = ort.get_available_providers()
    wanted = list(options.providers) if options.providers else ([CUDA, CPU] if CUDA in available else [CPU])
    missing = [p for p in wanted if p not in available]
    if missing:
        raise ModelLoadError(f"execution providers not available in this onnxruntime build: {', '.join(missing)}")
    source = graph_bytes if graph_bytes is not None else str(graph_path)
    try:
        try:
            session = ort.InferenceSession(source, sess_options=session_options, providers=wanted)
        except Exception as exc:  # ORT raises its own untyped errors
            if wanted[0] != CUDA or options.providers:
                raise
            logger.debug("CUDA session failed (%s); falling back to CPU", exc)
            session = ort.InferenceSession(source, sess_options=session_options, providers=[CPU])
    except Exception as exc:
        raise ModelLoadError(f"ONNX Runtime cannot load {graph_path}: {exc}") from exc
    device = "cuda" if session.get_providers()[0] == CUDA else "cpu"
    logger.debug("session on %s, providers=%s, threads=%d", device, session.get_providers(),
                 session_options.intra_op_num_threads)
    return session, device


def _weights_bytes(graph_path: Path) -> int:
    """The graph file plus the external-data files named after it (``model.onnx_data``, ``model.onnx.data``)."""
    return sum(p.stat().st_size for p in graph_path.parent.glob(graph_path.name + "*") if p.is_file())
