"""Load-time graph rewrite: compute the LM head for the last position only.

Decoder exports return logits for every input position (``[batch, sequence, vocab]``), but generation only ever
samples from the last one. For a prompt of *n* tokens the LM head (hidden x vocabulary, often the largest
matrix of a small model) then runs *n* times at prefill for nothing: about a quarter of the time to first token
for our shipped model at typical prompt lengths. Inserting ``Slice(hidden, -1:, axis=1)`` before the head's
``MatMul`` removes that work without touching the weights or any other result; transformers' ``generate`` does
the same thing with ``logits_to_keep=1``.

The rewrite is applied only when the pattern is unambiguous (the ``logits`` output comes straight from a
``MatMul`` of a 3-D activation with a 2-D weight), when the ``onnx`` package is installed, and when the model is
small enough to be re-serialized in memory; otherwise the graph is used as it is.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

logger = logging.getLogger(__name__)

#: Graphs with more bytes of weights than this are loaded as they are (protobuf serializes at most 2 GiB).
MAX_REWRITE_BYTES = 1 << 30
_SLICE_NAME = "clawdbot_last_position"


def last_position_logits(graph_path: Path, weights_bytes: int, logits: str = "logits") -> bytes | None:
    """The serialized graph with the LM head restricted to the last position, or ``None`` to use it as is."""
    if weights_bytes > MAX_REWRITE_BYTES:
        return None
    try:
        import onnx
    except ModuleNotFoundError:
        logger.debug("onnx is not installed: logits are computed for every prompt position")
        return None
    import numpy as np
    from onnx import helper, numpy_helper

    model = onnx.load(str(graph_path))  # external data is read relative to the graph file
    graph = model.graph
    producer = next((n for n in graph.node if logits in n.output), None)
    if producer is None or producer.op_type != "MatMul" or producer.domain not in ("", "ai.onnx"):
        return None
    if not (_rank(model, producer.input[1]) == 2 and _rank(model, producer.input[0]) in (3, None)):
        return None
    output = next(o for o in graph.output if o.name == logits)
    dims = output.type.tensor_type.shape.dim
    if len(dims) != 3:
        return None

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
    logger.debug("LM head restricted to the last position (%s)", producer.name)
    return model.SerializeToString()


def _rank(model: object, name: str) -> int | None:
    """Rank of ``name`` if the graph declares it (initializer, input or value_info); else None."""
    graph = model.graph  # type: ignore[attr-defined]
    for init in graph.initializer:
        if init.name == name:
            return len(init.dims)
    for value in (*graph.input, *graph.value_info, *graph.output):
        if value.name == name and value.type.tensor_type.HasField("shape"):
            return len(value.type.tensor_type.shape.dim)
    # A weight computed from an initializer (a tied embedding's Transpose) keeps the initializer's rank.
    for node in graph.node:
        if name in node.output and node.op_type == "Transpose" and len(node.input) == 1:
            return _rank(model, node.input[0])
    return None
