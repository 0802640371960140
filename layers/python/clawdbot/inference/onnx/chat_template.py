"""Rendering a model's Jinja ``chat_template`` exactly as transformers' ``apply_chat_template`` does.

The model was trained on the text its template produces, so the serving side must reproduce it byte for byte:
same sandboxed environment, ``trim_blocks`` and ``lstrip_blocks``, the ``loopcontrols`` extension, the
``tojson`` filter that keeps non-ASCII characters, the ``raise_exception`` and ``strftime_now`` globals, the
tokenizer's special tokens (``bos_token``, ``eos_token``, ...) as variables, and ``add_generation_prompt``.
A template that calls ``raise_exception`` (roles must alternate, say) is rejecting the conversation: that is the
client's error, reported as a 400 naming ``messages``.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from clawdbot.exceptions import InvalidRequestError
from clawdbot.inference.exceptions import ModelLoadError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import jinja2


class ChatTemplate:
    """A compiled chat template; rendering is thread-safe (Jinja templates are immutable once compiled)."""

    def __init__(self, source: str, special_tokens: Mapping[str, str | None] | None = None) -> None:
        self.source = source
        self.special_tokens = {k: v for k, v in (special_tokens or {}).items() if v is not None}
        self._template  # compile now: a broken template fails at model load, not at the first request  # noqa: B018

    @cached_property
    def _template(self) -> jinja2.Template:
        import jinja2
        from jinja2.ext import Extension, loopcontrols
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        class GenerationBlock(Extension):
            """``{% generation %}...{% endgeneration %}`` (transformers' assistant-mask marker): renders its body."""

            tags = {"generation"}

            def parse(self, parser: Any) -> Any:
                lineno = next(parser.stream).lineno
                body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
                return jinja2.nodes.Scope(body, lineno=lineno)

        def raise_exception(message: str) -> None:
            raise jinja2.exceptions.TemplateError(message)

        def tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
                   separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
            return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                              sort_keys=sort_keys)

        def strftime_now(fmt: str) -> str:
            return datetime.now().strftime(fmt)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=[GenerationBlock, loopcontrols])
        env.filters["tojson"] = tojson
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = strftime_now
        try:
            return env.from_string(self.source)
        except jinja2.exceptions.TemplateSyntaxError as exc:
            raise ModelLoadError(f"the model's chat_template is not valid Jinja: {exc}") from exc

    def render(self, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = True,
               **extra: Any) -> str:
        """The prompt text for ``messages`` (``[{"role": ..., "content": ...}, ...]``)."""
        import jinja2

        try:
            return self._template.render(
                messages=list(messages),
                add_generation_prompt=add_generation_prompt,
                **{"tools": None, "documents": None, **self.special_tokens, **extra},
            )
        except jinja2.exceptions.TemplateError as exc:
            raise InvalidRequestError(f"the conversation does not fit this model's chat format: {exc}",
                                      param="messages", code="invalid_messages") from exc
