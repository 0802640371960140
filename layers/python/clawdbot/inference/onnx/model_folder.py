"""The model folder: which files it must hold and what their JSON says.

The layout is Hugging Face Optimum's ONNX decoder export: ``model.onnx`` (with its external data files, if any),
``tokenizer.json`` (the ``tokenizers`` library's format), ``tokenizer_config.json`` (special tokens and the Jinja
``chat_template``), ``config.json`` (architecture, context length) and optionally ``generation_config.json``
(EOS ids). Everything here is plain JSON and file checks: no ONNX Runtime, so ``clawdbot model inspect`` can
report every missing piece at once, before a session is even created.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clawdbot.inference.exceptions import ModelLoadError

logger = logging.getLogger(__name__)

#: Graph file names, in order of preference (Optimum names a merged decoder ``decoder_model_merged.onnx``).
GRAPH_FILES = ("model.onnx", "decoder_model_merged.onnx")
#: Suffixes of external-data files written next to a graph (Optimum, torch.onnx, onnxruntime-genai).
EXTERNAL_DATA_SUFFIXES = (".onnx_data", ".onnx.data", ".onnx.data_0", ".bin")
#: ``config.json`` keys that hold the context window, across architectures (Llama, GPT-2, Falcon, ...).
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")
#: Tokenizers declare "unlimited" with a huge ``model_max_length``; anything above this is not a real window.
_SANE_MAX_LENGTH = 10_000_000


@dataclass(frozen=True, slots=True)
class ModelFolder:
    """A validated model folder. Build it with :meth:`load`, which raises if a required file is missing."""

    path: Path
    graph_path: Path
    data_paths: tuple[Path, ...]
    config: dict[str, Any]
    tokenizer_config: dict[str, Any]
    generation_config: dict[str, Any] = field(default_factory=dict)
    chat_template: str = ""

    @classmethod
    def load(cls, path: str | Path, *, require_graph: bool = True) -> ModelFolder:
        """Check the layout and read the JSON files; one :class:`ModelLoadError` lists every problem found.

        ``require_graph=False`` accepts a tokenizer bundle (the folder minus the weights), as shipped with a
        Lambda that counts prompt tokens for a remote model.
        """
        root = Path(path)
        if not root.is_dir():
            raise ModelLoadError(f"model folder {root} does not exist or is not a directory")
        problems: list[str] = []
        graph_path = next((root / name for name in GRAPH_FILES if (root / name).is_file()), None)
        if graph_path is None and require_graph:
            problems.append("model.onnx (the ONNX decoder graph) is missing")
        if not (root / "tokenizer.json").is_file():
            problems.append("tokenizer.json (the tokenizers-library tokenizer) is missing")
        config = _read_json(root / "config.json", problems, required=True)
        tokenizer_config = _read_json(root / "tokenizer_config.json", problems, required=True)
        generation_config = _read_json(root / "generation_config.json", problems, required=False)

        template = tokenizer_config.get("chat_template")
        if isinstance(template, list):  # transformers also accepts [{"name": ..., "template": ...}, ...]
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            template = named.get("default") or next(iter(named.values()), None)
        if not template and (root / "chat_template.jinja").is_file():  # transformers >= 4.47 saves it apart
            template = (root / "chat_template.jinja").read_text(encoding="utf-8")
        if not template and (root / "tokenizer_config.json").is_file():
            problems.append("tokenizer_config.json has no chat_template (and there is no chat_template.jinja)")

        folder = cls(
            path=root,
            graph_path=graph_path or root / GRAPH_FILES[0],
            data_paths=_external_data(root, graph_path),
            config=config,
            tokenizer_config=tokenizer_config,
            generation_config=generation_config,
            chat_template=template or "",
        )
        if config and folder.context_length_or_none() is None:
            problems.append(f"config.json declares no context length (one of {', '.join(CONTEXT_KEYS)})")
        if problems:
            raise ModelLoadError(f"{root} is not a usable model folder:\n  - " + "\n  - ".join(problems))
        return folder

    # ------------------------------------------------------------------ derived facts
    def context_length_or_none(self) -> int | None:
        text_config = self.config.get("text_config") or self.config
        for key in CONTEXT_KEYS:
            value = text_config.get(key)
            if isinstance(value, int) and value > 0:
                return value
        value = self.tokenizer_config.get("model_max_length")
        if isinstance(value, int) and 0 < value < _SANE_MAX_LENGTH:
            return value
        return None

    @property
    def context_length(self) -> int:
        """Prompt + completion tokens the model was built for (positions beyond it are untrained or absent)."""
        value = self.context_length_or_none()
        if value is None:  # load() rejects such folders; only a hand-built instance gets here
            raise ModelLoadError(f"{self.path}: no context length in config.json")
        return value

    def special_token(self, name: str) -> str | None:
        """A special token's text from ``tokenizer_config.json`` (plain string or serialized AddedToken)."""
        value = self.tokenizer_config.get(name)
        if isinstance(value, dict):
            value = value.get("content")
        return value if isinstance(value, str) and value else None

    def eos_token_ids(self) -> tuple[int, ...]:
        """EOS ids declared by ``generation_config.json`` and ``config.json`` (chat models often list several)."""
        ids: list[int] = []
        for source in (self.generation_config, self.config.get("text_config") or self.config):
            value = source.get("eos_token_id")
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, int) and item not in ids:
                    ids.append(item)
        return tuple(ids)

    def config_int(self, *keys: str) -> int | None:
        """The first integer among ``keys`` in ``config.json`` (or its ``text_config``)."""
        text_config = self.config.get("text_config") or self.config
        for key in keys:
            value = text_config.get(key)
            if isinstance(value, int) and value > 0:
                return value
        return None

    @property
    def files(self) -> tuple[Path, ...]:
        """Every regular file in the folder (what a package must carry)."""
        return tuple(sorted(p for p in self.path.rglob("*") if p.is_file() and not p.name.startswith(".")))

    @property
    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files)

    @property
    def weights_bytes(self) -> int:
        return sum(p.stat().st_size for p in (self.graph_path, *self.data_paths) if p.is_file())


def _read_json(path: Path, problems: list[str], *, required: bool) -> dict[str, Any]:
    if not path.is_file():
        if required:
            problems.append(f"{path.name} is missing")
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problems.append(f"{path.name} is not valid JSON ({exc})")
        return {}
    if not isinstance(value, dict):
        problems.append(f"{path.name} must hold a JSON object")
        return {}
    return value


def _external_data(root: Path, graph_path: Path | None) -> tuple[Path, ...]:
    """Files holding the graph's weights outside the protobuf, found by the exporters' naming conventions."""
    if graph_path is None:
        return ()
    stem = graph_path.name
    found = [p for p in root.iterdir()
             if p.is_file() and p.name != stem and p.name.startswith(graph_path.stem)
             and any(p.name.endswith(suffix) for suffix in EXTERNAL_DATA_SUFFIXES)]
    return tuple(sorted(found))
