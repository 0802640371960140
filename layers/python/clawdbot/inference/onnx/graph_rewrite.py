"""Load-time graph rewrites that remove work the decode loop does not need; results are unchanged.

**Last-position logits.** Decoder exports return logits for every input position (``[batch, sequence, vocab]``),
but generation only ever samples from the last one. For a prompt of *n* tokens the LM head (hidden x
vocabulary, often the largest matrix of a small model) then runs *n* times at prefill for nothing: about a
quarter of the time to first token for our shipped model at typical prompt lengths. Inserting
``Slice(hidden, -1:, axis=1)`` before the head's ``MatMul`` removes that work without touching any weight;
transformers' ``generate`` does the same with ``logits_to_keep=1``.

**Direct attention lengths** (fused ``GroupQueryAttention`` graphs, e.g. onnxruntime-genai's builder output).
Such graphs derive the two lengths the attention op needs, ``seqlens_k`` (tokens in the cache minus one) and
``total_sequence_length``, from ``attention_mask`` with a six-node subgraph (ReduceSum, Sub, Shape, Gather,
Casts) that runs on every step. The decode loop knows both numbers already, so we feed them as two small inputs
(``ATTENTION_LENGTH_INPUTS``) and drop the subgraph; the mask, then unused, leaves the graph too. A decode step
then binds nothing at all: the loop writes three integers into buffers bound once.

Rewrites apply only when their pattern is unambiguous, when the ``onnx`` package is installed, and when the
model is small enough to be re-serialized in memory; otherwise the graph is used as it is.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

logger = logging.getLogger(__name__)

#: Graphs with more bytes of weights than this are loaded as they are (protobuf serializes at most 2 GiB).
MAX_REWRITE_BYTES = 1 << 30
#: The inputs that replace ``attention_mask`` in a rewritten fused-attention graph: int32 ``[batch]`` (tokens
#: in the cache after this step, minus one) and an int32 scalar (that count's maximum over the batch).
SEQLENS_INPUT = "clawdbot_seqlens_k"
TOTAL_LENGTH_INPUT = "clawdbot_total_sequence_length"
ATTENTION_LENGTH_INPUTS = (SEQLENS_INPUT, TOTAL_LENGTH_INPUT)
_SLICE_NAME = "clawdbot_last_position"


def rewrite(graph_path: Path, weights_bytes: int, *, last_position: bool = True,
            attention_lengths: bool = True, logits: str = "logits") -> bytes | None:
    """The serialized, rewritten graph, or ``None`` when no rewrite applies (use the file as it is)."""
    if weights_bytes > MAX_REWRITE_BYTES or not (last_position or attention_lengths):
        return None
    try:
        import onnx
    except ModuleNotFoundError:
        logger.debug("onnx is not installed: the graph is used as exported")
        return None

    model = onnx.load(str(graph_path))  # external data is read relative to the graph file
    applied = []
    if last_position and _last_position_logits(model, logits):
        applied.append("last-position logits")
    if attention_lengths and _direct_attention_lengths(model):
        applied.append("direct attention lengths")
    if not applied:
        return None
    logger.debug("graph rewrites: %s", ", ".join(applied))
    return model.SerializeToString()


def _last_position_logits(model: object, logits: str) -> bool:
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model.graph  # type: ignore[attr-defined]
    producer = next((n for n in graph.node if logits in n.output), None)
    if producer is None or producer.op_type != "MatMul" or producer.domain not in ("", "ai.onnx"):
        return False
    if not (_rank(graph, producer.input[1]) == 2 and _rank(graph, producer.input[0]) in (3, None)):
        return False
    output = next(o for o in graph.output if o.name == logits)
    dims = output.type.tensor_type.shape.dim
    if len(dims) != 3:
        return False
    starts, ends, axes = (f"{_SLICE_NAME}/{k}" for k in ("starts", "ends", "axes"))
    graph.initializer.extend([
        numpy_helper.from_array(np.array([-1], dtype=np.int64), starts),
        numpy_helper.from_array(np.array([np.iinfo(np.int64).max], dtype=np.int64), ends),
        numpy_helper.from_array(np.array([1], dtype=np.int64), axes),
    ])
    sliced = f"{_SLICE_NAME}/hidden"
    index = list(graph.node).index(producer)
    graph.node.insert(index, helper.make_node("Slice", [producer.input[0], starts, ends, axes], [sliced],
                                              name=_SLICE_NAME))
    producer.input[0] = sliced
    dims[1].Clear()
    dims[1].dim_value = 1
    return True


def _direct_attention_lengths(model: object) -> bool:
    from onnx import TensorProto, helper

    graph = model.graph  # type: ignore[attr-defined]
    attention = [n for n in graph.node if n.op_type == "GroupQueryAttention" and n.domain == "com.microsoft"]
    if not attention or any(len(n.input) < 7 for n in attention):
        return False
    seqlens = {n.input[5] for n in attention}
    totals = {n.input[6] for n in attention}
    graph_inputs = {i.name for i in graph.input}
    if len(seqlens) != 1 or len(totals) != 1 or "" in seqlens | totals or (seqlens | totals) & graph_inputs:
        return False
    for node in attention:
        node.input[5], node.input[6] = SEQLENS_INPUT, TOTAL_LENGTH_INPUT
    graph.input.extend([
        helper.make_tensor_value_info(SEQLENS_INPUT, TensorProto.INT32, ["batch_size"]),
        helper.make_tensor_value_info(TOTAL_LENGTH_INPUT, TensorProto.INT32, []),
    ])
    _remove_dead_nodes(graph)
    used = {name for n in graph.node for name in n.input} | {o.name for o in graph.output}
    for value in [i for i in graph.input if i.name == "attention_mask" and i.name not in used]:
        graph.input.remove(value)
    return True


def _remove_dead_nodes(graph: object) -> None:
    """Drop nodes none of whose outputs is consumed or a graph output (repeatedly, back to the inputs)."""
    while True:
        used = {name for n in graph.node for name in n.input} | {o.name for o in graph.output}  # type: ignore[attr-defined]
        dead = [n for n in graph.node if not any(o in used for o in n.output)]  # type: ignore[attr-defined]
        if not dead:
            return
        for node in dead:
            graph.node.remove(node)  # type: ignore[attr-defined]


def _rank(graph: object, name: str) -> int | None:
    """Rank of ``name`` if the graph declares it (initializer, input or value_info); else None."""
    for init in graph.initializer:  # type: ignore[attr-defined]
        if init.name == name:
            return len(init.dims)
    for value in (*graph.input, *graph.value_info, *graph.output):  # type: ignore[attr-defined]
        if value.name == name and value.type.tensor_type.HasField("shape"):
            return len(value.type.tensor_type.shape.dim)
    # A weight computed from an initializer (a tied embedding's Transpose) keeps the initializer's rank.
    for node in graph.node:  # type: ignore[attr-defined]
        if name in node.output and node.op_type == "Transpose" and len(node.input) == 1:
            return _rank(graph, node.input[0])
    return None
