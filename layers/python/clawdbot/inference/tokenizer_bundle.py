"""A model's prompt side without its weights: tokenizer + chat template + context length.

A Lambda that calls a remote model (SageMaker) still has to count prompt tokens to fit history into the context
window, and the count must be the one the model will report. It ships a *tokenizer bundle* - the model folder
minus the graph: ``tokenizer.json``, ``tokenizer_config.json`` (with the chat template), ``config.json``,
``generation_config.json`` - and renders prompts with the ONNX engine's own :class:`ChatTemplate` and
:class:`ModelFolder` rules (importing them loads neither numpy nor ONNX Runtime), so both sides agree.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from clawdbot.inference.exceptions import ModelLoadError
from clawdbot.inference.onnx.chat_template import ChatTemplate
from clawdbot.inference.onnx.model_folder import ModelFolder
from clawdbot.inference.prompt_pieces import PromptPieces

if TYPE_CHECKING:
    from collections.abc import Sequence

    from clawdbot.inference.types import ChatMessage

logger = logging.getLogger(__name__)

#: What a bundle holds (``generation_config.json`` and ``chat_template.jinja`` only when the model has them).
BUNDLE_FILES = ("tokenizer.json", "tokenizer_config.json", "config.json", "generation_config.json",
                "chat_template.jinja")
#: Special tokens a chat template may use as variables (the same set the ONNX engine passes).
SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token")


class TokenizerBundle:
    """Prompt encoding for a model folder or a tokenizer bundle (the ONNX backend's prompt side too);
    thread-safe (tokenizers' encode is)."""

    def __init__(self, path: str | Path | ModelFolder, *, model_id: str | None = None) -> None:
        from tokenizers import Tokenizer

        self.folder = path if isinstance(path, ModelFolder) else ModelFolder.load(path, require_graph=False)
        try:
            self.tokenizer = Tokenizer.from_file(str(self.folder.path / "tokenizer.json"))
        except Exception as exc:  # tokenizers raises a bare Exception on bad files
            raise ModelLoadError(f"tokenizer.json in {self.folder.path} cannot be loaded: {exc}") from exc
        self.template = ChatTemplate(
            self.folder.chat_template, {name: self.folder.special_token(name) for name in SPECIAL_TOKEN_NAMES}
        )
        self.pieces = PromptPieces(self.tokenizer)
        #: The folder's name, as the ONNX engine names a model, so both backends report the same id.
        self.model_id = model_id or self.folder.path.resolve().name
        self.context_length = self.folder.context_length

    def _render(self, messages: Sequence[ChatMessage]) -> str:
        return self.template.render([{"role": m.role, "content": m.content} for m in messages],
                                    add_generation_prompt=True)

    def encode_prompt(self, messages: Sequence[ChatMessage]) -> list[int]:
        """Prompt ids as transformers' ``apply_chat_template(..., add_generation_prompt=True)`` makes them: the
        template writes any BOS and special tokens, so none are added (transformers avoids that too)."""
        # From cached pieces: only the text new since the last turn is encoded (clawdbot.inference.prompt_pieces).
        return self.pieces.encode(self._render(messages))

    def count_prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        # From cached pieces too: the context fit counts 2-4 prompts per turn.
        return self.pieces.count(self._render(messages))


def copy_bundle(model_dir: str | Path, out_dir: str | Path) -> Path:
    """Copy a model folder's tokenizer bundle to ``out_dir`` (what a deployment ships with the function).

    The result is checked by loading it, so a bundle missing a file fails at build time, not at cold start.
    """
    src, out = Path(model_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in BUNDLE_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, out / name)
    TokenizerBundle(out)
    logger.debug("tokenizer bundle of %s copied to %s", src, out)
    return out


__all__ = ["BUNDLE_FILES", "TokenizerBundle", "copy_bundle"]
