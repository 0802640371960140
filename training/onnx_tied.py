"""Store a tied embedding once in an exported ONNX decoder.

With tied input/output embeddings the TorchScript exporter constant-folds the output projection into a
second, transposed copy of the embedding matrix. For our model that copy is ~4 MB of a ~22 MB file and
pushes it over the 20 MB we allow ourselves to commit. This pass replaces the copy with a ``Transpose`` of
the embedding initializer; ONNX Runtime constant-folds it back when a session loads the graph, so the file
shrinks and inference cost is unchanged.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

logger = logging.getLogger(__name__)


def share_tied_embedding(onnx_path: Path, *, verify: bool = True) -> int:
    """Rewrite ``onnx_path`` in place; returns how many duplicate initializers were removed.

    Only an initializer that is *exactly* the transpose of a ``Gather``-ed embedding matrix is replaced, so
    running the pass on an untied model is a no-op.
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(onnx_path))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    embeddings = {
        node.input[0]: numpy_helper.to_array(inits[node.input[0]])
        for node in graph.node
        if node.op_type == "Gather" and node.input[0] in inits and len(inits[node.input[0]].dims) == 2
    }
    replaced: list[tuple[str, str]] = []
    for name, init in list(inits.items()):
        if name in embeddings or len(init.dims) != 2:
            continue
        for emb_name, emb in embeddings.items():
            if tuple(init.dims) == emb.shape[::-1] and np.array_equal(numpy_helper.to_array(init), emb.T):
                replaced.append((name, emb_name))
                break
    if not replaced:
        return 0

    before = _logits(onnx_path) if verify else None
    for name, emb_name in replaced:
        graph.initializer.remove(inits[name])
        graph.node.insert(0, helper.make_node("Transpose", [emb_name], [name], perm=[1, 0],
                                              name=f"tied_transpose_{len(replaced)}"))
    onnx.checker.check_model(model)
    onnx.save_model(model, str(onnx_path))
    if before is not None:
        after = _logits(onnx_path)
        if not np.allclose(before, after, atol=1e-5, rtol=1e-5):
            raise RuntimeError("sharing the tied embedding changed the model's logits")
    logger.debug("shared %d tied embedding(s) in %s", len(replaced), onnx_path)
    return len(replaced)


def _logits(onnx_path: Path) -> object:
    """Logits of a fixed 4-token prefill with an empty cache (enough to catch a wrong rewrite)."""
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    feeds: dict[str, object] = {}
    for inp in session.get_inputs():
        if inp.name == "input_ids":
            feeds[inp.name] = np.array([[5, 6, 7, 8]], dtype=np.int64)
        elif inp.name == "attention_mask":
            feeds[inp.name] = np.ones((1, 4), dtype=np.int64)
        elif inp.name == "position_ids":
            feeds[inp.name] = np.arange(4, dtype=np.int64)[None, :]
        else:  # past_key_values.{i}.key/value: (batch, kv_heads, 0, head_dim)
            feeds[inp.name] = np.zeros((1, inp.shape[1], 0, inp.shape[3]), dtype=np.float32)
    return session.run(["logits"], feeds)[0]
