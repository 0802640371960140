"""What a decoder graph takes and returns, read from the ONNX Runtime session instead of assumed.

Names, dtypes (fp32/fp16 KV cache and logits, int32/int64 ids), the number of layers and the KV head geometry
all come from the graph's declared inputs and outputs; ``config.json`` fills in only dimensions a graph leaves
symbolic (onnxruntime-genai's builder names the head size ``kv_cache_dim``). Optional inputs are recognised
(``position_ids``, Optimum's legacy ``use_cache_branch``); an input the engine cannot feed is an error that names
it, not a crash at the first request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from clawdbot.inference.exceptions import ModelLoadError
from clawdbot.inference.onnx.graph_rewrite import SEQLENS_INPUT, TOTAL_LENGTH_INPUT

if TYPE_CHECKING:
    from clawdbot.inference.onnx.model_folder import ModelFolder

_PAST = re.compile(r"^past(?:_key_values)?\.(\d+)\.(key|value)$")
_PRESENT = re.compile(r"^present(?:_key_values)?\.(\d+)\.(key|value)$")
#: ONNX Runtime's type strings -> numpy dtype names.
_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(bool)": "bool",
}


@dataclass(frozen=True, slots=True)
class KVLayer:
    past_key: str
    past_value: str
    present_key: str
    present_value: str


@dataclass(frozen=True, slots=True)
class GraphSpec:
    """The decoder graph's interface; every field was read from the graph (or, for symbolic dims, config)."""

    input_ids: str
    #: ``None`` only in a graph rewritten to take the attention lengths directly (see ``graph_rewrite``).
    attention_mask: str | None
    position_ids: str | None
    use_cache_branch: str | None
    logits: str
    layers: tuple[KVLayer, ...]
    kv_heads: int
    head_dim: int
    kv_dtype: str
    logits_dtype: str
    ids_dtype: str
    mask_dtype: str
    positions_dtype: str
    vocab_size: int | None
    #: The graph returns logits for the last position only (``[batch, 1, vocab]``), not for every position.
    last_logits_only: bool = False
    #: int32 inputs carrying the fused attention's lengths instead of the mask (``graph_rewrite``).
    seqlens_k: str | None = None
    total_length: str | None = None

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @classmethod
    def from_io(cls, inputs: list[Any], outputs: list[Any], folder: ModelFolder | None = None) -> GraphSpec:
        """Build from ``session.get_inputs()`` / ``get_outputs()`` (objects with ``name``, ``shape``, ``type``).

        Raises :class:`ModelLoadError` naming every input or output that does not fit the decoder contract.
        """
        by_name = {i.name: i for i in inputs}
        out_by_name = {o.name: o for o in outputs}
        problems: list[str] = []
        direct_lengths = SEQLENS_INPUT in by_name and TOTAL_LENGTH_INPUT in by_name
        for required in ("input_ids",) if direct_lengths else ("input_ids", "attention_mask"):
            if required not in by_name:
                problems.append(f"input '{required}' is missing")
        if "logits" not in out_by_name:
            problems.append("output 'logits' is missing")

        past: dict[tuple[int, str], str] = {}
        for name in by_name:
            match = _PAST.match(name)
            if match:
                past[(int(match[1]), match[2])] = name
        present: dict[tuple[int, str], str] = {}
        for name in out_by_name:
            match = _PRESENT.match(name)
            if match:
                present[(int(match[1]), match[2])] = name
        num_layers = len({layer for layer, _ in past})
        if num_layers == 0:
            problems.append("no past_key_values.{i}.key/value inputs: the graph has no KV cache")
        layers: list[KVLayer] = []
        for i in range(num_layers):
            names = [past.get((i, "key")), past.get((i, "value")), present.get((i, "key")),
                     present.get((i, "value"))]
            if None in names:
                problems.append(f"layer {i} lacks one of past_key_values.{i}.key/value, present.{i}.key/value")
                continue
            layers.append(KVLayer(*names))  # type: ignore[arg-type]

        known = {"input_ids", "attention_mask", "position_ids", "use_cache_branch", SEQLENS_INPUT,
                 TOTAL_LENGTH_INPUT, *past.values()}
        unknown = sorted(set(by_name) - known)
        if unknown:
            problems.append(f"inputs the engine cannot feed: {', '.join(unknown)}")
        if problems:
            raise ModelLoadError("the ONNX graph does not follow the decoder layout:\n  - " + "\n  - ".join(problems))

        first_past = by_name[layers[0].past_key]
        kv_dtype = _dtype(first_past.type, first_past.name)
        shape = list(first_past.shape)
        if len(shape) != 4:
            raise ModelLoadError(f"{first_past.name} must be 4-D (batch, heads, sequence, head_dim), got {shape}")
        kv_heads = shape[1] if isinstance(shape[1], int) else None
        head_dim = shape[3] if isinstance(shape[3], int) else None
        if folder is not None:
            heads = folder.config_int("num_attention_heads", "n_head", "num_heads")
            kv_heads = kv_heads or folder.config_int("num_key_value_heads", "n_kv_heads", "multi_query_group_num")
            kv_heads = kv_heads or heads
            hidden = folder.config_int("hidden_size", "n_embd", "d_model")
            head_dim = head_dim or folder.config_int("head_dim", "head_size")
            head_dim = head_dim or (hidden // heads if hidden and heads else None)
        if not kv_heads or not head_dim:
            raise ModelLoadError(
                f"cannot tell the KV cache geometry: {first_past.name} has shape {shape} and config.json lacks "
                "num_key_value_heads / head_dim")
        logits = out_by_name["logits"]
        vocab = logits.shape[-1] if logits.shape and isinstance(logits.shape[-1], int) else None
        position_ids = by_name.get("position_ids")
        mask = by_name.get("attention_mask")
        return cls(
            input_ids="input_ids",
            attention_mask="attention_mask" if mask is not None else None,
            position_ids="position_ids" if position_ids is not None else None,
            use_cache_branch="use_cache_branch" if "use_cache_branch" in by_name else None,
            logits="logits",
            layers=tuple(layers),
            kv_heads=int(kv_heads),
            head_dim=int(head_dim),
            kv_dtype=kv_dtype,
            logits_dtype=_dtype(logits.type, "logits"),
            ids_dtype=_dtype(by_name["input_ids"].type, "input_ids"),
            mask_dtype=_dtype(mask.type, "attention_mask") if mask is not None else "int64",
            positions_dtype=_dtype(position_ids.type, "position_ids") if position_ids is not None else "int64",
            vocab_size=vocab,
            last_logits_only=len(logits.shape) == 3 and logits.shape[1] == 1,
            seqlens_k=SEQLENS_INPUT if direct_lengths else None,
            total_length=TOTAL_LENGTH_INPUT if direct_lengths else None,
        )


def _dtype(type_string: str, name: str) -> str:
    try:
        return _DTYPES[type_string]
    except KeyError:
        raise ModelLoadError(f"{name} has unsupported element type {type_string}") from None
