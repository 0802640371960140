"""The decode loop: prompt ids in, generated ids out, with a KV cache and no per-step allocations.

One :class:`DecoderEngine` (one ONNX Runtime session) serves every request; each call to :meth:`generate` owns
its buffers and IO binding, so concurrent requests share nothing mutable.

Per request we allocate, once, everything the loop touches: the token and attention-mask/position buffers
(the mask and positions for step *t* are views of a ``capacity``-long array, so a step only re-binds a shape
or a pointer) and the KV cache. Two cache layouts, chosen by what the graph does rather than by its op names:

- **in place** (onnxruntime-genai builder graphs, fused ``GroupQueryAttention``): the past and present of a
  layer are *one* buffer of ``capacity`` positions; the attention op writes the new keys/values at the current
  length, found from the attention mask (or the lengths fed directly, see ``graph_rewrite``). Nothing is copied
  between steps.
- **concatenating** (plain Optimum exports): present = concat(past, new). Two ``capacity``-sized buffers per
  tensor alternate as past and present, so the graph writes straight into memory we own and the next step reads
  it back without a copy or an allocation.

At load, :meth:`DecoderEngine.supports_in_place_cache` runs two tiny steps in place and compares their logits
with a cache-less run; only a graph that gets them right is driven in place.

With a :class:`~clawdbot.inference.onnx.prefix_cache.PrefixCache` (on CPU), a finished run's buffers are kept with
the ids they hold, and the next prompt that starts with some of them prefills only the rest: a chat session's
next turn computes its new message, not its whole history again. Taken over whole when the prompt continues the
stored run and it has room, copied (the shared prefix only) into a new run otherwise, so another conversation's
stored run stays for its own next turn. :meth:`DecoderEngine.supports_prefix_reuse` checks at load that the graph
continues a cache with several tokens at once as a cache-less run computes them.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from clawdbot.inference.cancellation import caller_gone
from clawdbot.inference.exceptions import GenerationCancelledError, InferenceError
from clawdbot.inference.onnx.graph import GraphSpec

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    import numpy as np
    import onnxruntime as ort

    from clawdbot.inference.onnx.model_folder import ModelFolder
    from clawdbot.inference.onnx.prefix_cache import Entry, PrefixCache
    from clawdbot.inference.onnx.runtime import RuntimeOptions

logger = logging.getLogger(__name__)

#: With a prefix cache, a new run's positions are rounded up to this (within the model's context): the session's
#: next turn, a little longer, then usually fits the same buffers and takes them over without a copy.
_ROOM = 128


@dataclass(slots=True)
class RunReport:
    """What a :meth:`DecoderEngine.generate` call found, filled in as it starts (its first token)."""

    #: Prompt tokens taken from the prefix cache, not computed.
    cached_tokens: int = 0


def _until_gone(tokens: Iterator[int], gone: threading.Event) -> Iterator[int]:
    """``tokens``, each next step run only while ``gone`` is not set. Stopping closes ``tokens``, as a caller that
    stops iterating does: the prefix cache keeps the run (its buffers are whole up to the last token)."""
    try:
        if gone.is_set():  # gone while it waited for a slot: not even the prefill
            raise GenerationCancelledError("The client closed the connection before the turn began.")
        for produced, token in enumerate(tokens, start=1):
            yield token
            if gone.is_set():
                logger.debug("caller gone: generation stopped after %d tokens", produced)
                raise GenerationCancelledError(
                    f"The client closed the connection: the turn stopped after {produced} tokens.")
    finally:
        tokens.close()  # type: ignore[attr-defined]  # a generator


class DecoderEngine:
    """Runs a decoder graph. Thread-safe: all per-request state lives in the generator of :meth:`generate`."""

    def __init__(self, session: ort.InferenceSession, spec: GraphSpec, *, device: str = "cpu",
                 in_place_cache: bool | None = None, prefix_cache_bytes: int = 0,
                 max_capacity: int | None = None, max_generations: int | None = None) -> None:
        import numpy as np

        from clawdbot.inference.onnx.runtime import default_generations

        self.session = session
        self.spec = spec
        self.device = device
        self._kv_dtype = np.dtype(spec.kv_dtype)
        self._ids_dtype = np.dtype(spec.ids_dtype)
        self._mask_dtype = np.dtype(spec.mask_dtype)
        self._pos_dtype = np.dtype(spec.positions_dtype)
        self._logits_dtype = np.dtype(spec.logits_dtype)
        self.vocab_size = spec.vocab_size or int(self.forward([0]).shape[-1])
        self.in_place_cache = self.supports_in_place_cache() if in_place_cache is None else in_place_cache
        #: Positions a run may hold (the model's context); with a prefix cache, runs get room up to it.
        self.max_capacity = max_capacity
        #: Generations that may run at once (:meth:`generate` holds one from its first step to its end).
        self.max_generations = max_generations or default_generations()
        self._slots = threading.BoundedSemaphore(self.max_generations)
        self.prefix_cache: PrefixCache | None = None
        if prefix_cache_bytes > 0 and device == "cpu" and self.supports_prefix_reuse():
            from clawdbot.inference.onnx.prefix_cache import PrefixCache

            self.prefix_cache = PrefixCache(prefix_cache_bytes)
        logger.debug("decoder: %d layers, %d kv heads x %d, %s cache, %s KV cache, prefix cache %s",
                     spec.num_layers, spec.kv_heads, spec.head_dim, spec.kv_dtype,
                     "in-place" if self.in_place_cache else "concat",
                     f"{prefix_cache_bytes >> 20} MiB" if self.prefix_cache else "off")

    @classmethod
    def from_folder(cls, folder: ModelFolder, options: RuntimeOptions | None = None) -> DecoderEngine:
        from clawdbot.inference.onnx.graph_rewrite import rewrite
        from clawdbot.inference.onnx.runtime import RuntimeOptions, create_session

        options = options or RuntimeOptions()
        rewritten = rewrite(folder.graph_path, folder.weights_bytes, last_position=options.last_position_logits,
                            attention_lengths=options.direct_attention_lengths)
        session, device = create_session(folder.graph_path, options, graph_bytes=rewritten)
        spec = GraphSpec.from_io(session.get_inputs(), session.get_outputs(), folder)
        return cls(session, spec, device=device, prefix_cache_bytes=options.prefix_cache_bytes,
                   max_capacity=folder.context_length, max_generations=options.max_generations)

    # ------------------------------------------------------------------ generation
    def generate(self, prompt_ids: Sequence[int], *, max_new_tokens: int, sampler: Callable[[np.ndarray], int],
                 use_cache: bool = True, report: RunReport | None = None) -> Iterator[int]:
        """Yield up to ``max_new_tokens`` sampled ids. Lazy: each next() runs one step, so a caller that stops
        iterating (EOS, stop string, client gone) costs no further compute. EOS is the caller's business.
        ``report`` is told how many prompt tokens came from the prefix cache.

        A generation holds one of :attr:`max_generations` slots from its first step until it ends or the caller
        stops iterating; past that many, the next waits for a slot before its prefill. Inside a turn whose caller
        is watched (``clawdbot.inference.cancellation``), a caller that has gone stops it before its next step
        (:class:`GenerationCancelledError`)."""
        if not prompt_ids:
            raise InferenceError("cannot generate from an empty prompt")
        if max_new_tokens <= 0:
            return
        with self._slots:
            tokens = self._generate(prompt_ids, max_new_tokens, sampler, use_cache, report)
            gone = caller_gone()
            yield from tokens if gone is None else _until_gone(tokens, gone)

    def _generate(self, prompt_ids: Sequence[int], max_new_tokens: int, sampler: Callable[[np.ndarray], int],
                  use_cache: bool, report: RunReport | None) -> Iterator[int]:
        if not use_cache:
            yield from self._generate_without_cache(prompt_ids, max_new_tokens, sampler)
            return
        if self.prefix_cache is not None:
            yield from self._generate_reusing(self.prefix_cache, prompt_ids, max_new_tokens, sampler, report)
            return
        run = _Run(self, capacity=len(prompt_ids) + max_new_tokens, in_place=self.in_place_cache)
        token = sampler(run.prefill(prompt_ids))
        yield token
        yield from run.decode(token, max_new_tokens - 1, sampler)

    def _generate_reusing(self, cache: PrefixCache, prompt_ids: Sequence[int], max_new_tokens: int,
                          sampler: Callable[[np.ndarray], int], report: RunReport | None) -> Iterator[int]:
        """:meth:`generate` on a run that starts from the longest stored prefix of the prompt (at least its last
        token is computed: its logits give the first token), stored again when the caller is done with it: at
        the end, or when it stops iterating. A run that failed is not stored (its buffers may be half written)."""
        needed = len(prompt_ids) + max_new_tokens
        entry, common = cache.take(prompt_ids, len(prompt_ids) - 1)
        run = self._run_from(cache, entry, common, needed)
        if report is not None:
            report.cached_tokens = run.length
        kept = False
        try:
            token = sampler(run.prefill(prompt_ids, past=run.length))
            yield token
            yield from run.decode(token, max_new_tokens - 1, sampler)
            kept = True
        except GeneratorExit:
            kept = True
            raise
        finally:
            if kept:
                cache.put(run.fed, run, run.nbytes)

    def _run_from(self, cache: PrefixCache, entry: Entry | None, common: int, needed: int) -> _Run:
        """A run with room for ``needed`` positions holding the first ``common`` ids of ``entry``'s (none without
        an entry). The stored run itself when the prompt continues it (all but its last block at most: a reply
        tokenized again may differ at its end) and it has the room; else a new one with a copy of the prefix,
        the stored run going back to the cache if it was another conversation's."""
        from clawdbot.inference.onnx.prefix_cache import BLOCK

        stored: _Run | None = entry.value if entry is not None else None
        continues = entry is not None and common >= len(entry.ids) - BLOCK
        if stored is not None and continues and stored.capacity >= needed:
            stored.truncate(common)
            return stored
        capacity = needed
        if self.max_capacity is not None and needed <= self.max_capacity:
            capacity = min(self.max_capacity, -(-needed // _ROOM) * _ROOM)  # room for the next turn or two
        run = _Run(self, capacity=capacity, in_place=self.in_place_cache)
        if entry is not None and stored is not None:
            run.load_prefix(stored, common)
            if not continues:
                cache.put(entry.ids, stored, entry.nbytes)
        return run

    def _generate_without_cache(self, prompt_ids: Sequence[int], max_new_tokens: int,
                                sampler: Callable[[np.ndarray], int]) -> Iterator[int]:
        """Recompute the whole sequence every step: the reference the cached path must match."""
        ids = list(prompt_ids)
        for _ in range(max_new_tokens):
            token = sampler(self.forward(ids)[-1])
            yield token
            ids.append(token)

    def forward(self, ids: Sequence[int]) -> np.ndarray:
        """Logits for ``ids`` from an empty cache: ``[len(ids), vocab]``, or ``[1, vocab]`` (the last position)
        for a graph that computes only that."""
        import numpy as np

        spec = self.spec
        n = len(ids)
        empty = np.zeros((1, spec.kv_heads, 0, spec.head_dim), dtype=self._kv_dtype)
        feeds: dict[str, Any] = {
            spec.input_ids: np.asarray(ids, dtype=self._ids_dtype).reshape(1, n),
        }
        if spec.attention_mask:
            feeds[spec.attention_mask] = np.ones((1, n), dtype=self._mask_dtype)
        if spec.seqlens_k and spec.total_length:
            feeds[spec.seqlens_k] = np.array([n - 1], dtype=np.int32)
            feeds[spec.total_length] = np.array(n, dtype=np.int32)
        if spec.position_ids:
            feeds[spec.position_ids] = np.arange(n, dtype=self._pos_dtype).reshape(1, n)
        if spec.use_cache_branch:
            feeds[spec.use_cache_branch] = np.zeros((1,), dtype=bool)
        for layer in spec.layers:
            feeds[layer.past_key] = empty
            feeds[layer.past_value] = empty
        return self.session.run([spec.logits], feeds)[0][0]

    # ------------------------------------------------------------------ cache layout detection
    def supports_prefix_reuse(self) -> bool:
        """Whether a cache holding one token, continued with two at once, gives the logits of a cache-less run
        (what a prompt that starts with a stored prefix needs)."""
        import numpy as np

        probe = [1, min(2, self.vocab_size - 1), min(3, self.vocab_size - 1)]
        try:
            run = _Run(self, capacity=4, in_place=self.in_place_cache)
            run.prefill(probe[:1])
            got = run.prefill(probe, past=1).astype(np.float32)
        except Exception as exc:  # ORT shape errors have no dedicated type
            logger.debug("prefix reuse not supported: %s", str(exc).splitlines()[0] if str(exc) else exc)
            return False
        expected = self.forward(probe)[-1].astype(np.float32)
        tolerance = 1e-2 if self._kv_dtype == np.float16 else 1e-4
        scale = max(1.0, float(np.abs(expected).max()))
        return bool(np.allclose(got, expected, atol=tolerance * scale, rtol=tolerance))

    def supports_in_place_cache(self) -> bool:
        """Whether the graph writes its present into a shared past/present buffer correctly (fused attention).

        A concatenating graph fails the in-place binding (its present is one position longer than the
        buffer); a graph that accepts it is trusted only if its logits equal a cache-less run.
        """
        import numpy as np
        import onnxruntime as ort

        probe = [1, min(2, self.vocab_size - 1)]
        quiet = ort.RunOptions()
        quiet.log_severity_level = 4  # the expected failure of a concatenating graph is not worth a log line
        try:
            run = _Run(self, capacity=4, in_place=True, run_options=quiet)
            got = [run.prefill(probe[:1]).astype(np.float32), run.step(probe[1]).astype(np.float32)]
        except Exception as exc:  # ORT shape errors have no dedicated type
            logger.debug("in-place KV cache not supported: %s", str(exc).splitlines()[0] if str(exc) else exc)
            return False
        expected = [self.forward(probe[:1])[-1].astype(np.float32), self.forward(probe)[-1].astype(np.float32)]
        tolerance = 1e-2 if self._kv_dtype == np.float16 else 1e-4
        scale = max(1.0, *(float(np.abs(e).max()) for e in expected))
        return all(np.allclose(g, e, atol=tolerance * scale, rtol=tolerance)
                   for g, e in zip(got, expected, strict=True))


class _Binding:
    """The IO-binding calls of the decode loop: ``bind_input(name, device, dtype, shape, pointer)``,
    ``bind_output(...)`` and ``run(target, run_options)``, with ``cpu``/``kv`` the device arguments for host
    buffers and for the KV cache, and ``target`` what ``run`` takes.

    ONNX Runtime's public ``IOBinding.bind_input``/``bind_output`` and ``run_with_iobinding`` wrap pybind methods
    with per-call bookkeeping (device objects, WebGPU graph-capture checks) that costs a few microseconds per
    call: several percent of a small model's decode step, paid on every token. When the pybind layer is there
    (every release so far) we call it directly with prebuilt device descriptors; otherwise the public API.
    """

    __slots__ = ("bind_input", "bind_output", "cpu", "io", "kv", "run", "target")

    def __init__(self, session: ort.InferenceSession, device: str) -> None:
        self.io = io = session.io_binding()
        raw, raw_session = getattr(io, "_iobinding", None), getattr(session, "_sess", None)
        try:
            from onnxruntime.capi import _pybind_state as C

            cpu = C.OrtDevice(C.OrtDevice.cpu(), C.OrtDevice.default_memory(), 0)
            kv = cpu if device == "cpu" else C.OrtDevice(C.OrtDevice.cuda(), C.OrtDevice.default_memory(), 0)
        except (ImportError, AttributeError):  # pragma: no cover - a future ORT without these internals
            raw = None
        if raw is not None and raw_session is not None:
            self.bind_input, self.bind_output = raw.bind_input, raw.bind_output
            self.run, self.target = raw_session.run_with_iobinding, raw
            self.cpu, self.kv = cpu, kv
        else:  # pragma: no cover
            self.bind_input = lambda name, dev, dtype, shape, ptr: io.bind_input(name, dev, 0, dtype, shape, ptr)
            self.bind_output = lambda name, dev, dtype, shape, ptr: io.bind_output(name, dev, 0, dtype, shape, ptr)
            self.run, self.target = session.run_with_iobinding, io
            self.cpu, self.kv = "cpu", device


class _Run:
    """One request's buffers and IO binding. Not shared between threads (a stored one belongs to the cache).

    ``fed`` are the ids whose keys and values the cache holds, ``length`` of them.
    """

    __slots__ = ("_bind", "_buffers", "_flip", "_keep", "_kv", "_logits_row", "_mask", "_mask_ptr", "_pos_ptr",
                 "_positions", "_run_options", "_seqlens", "_spec", "_step_logits", "_token", "_total", "capacity",
                 "device", "engine", "fed", "in_place", "length", "nbytes")

    def __init__(self, engine: DecoderEngine, *, capacity: int, in_place: bool,
                 run_options: ort.RunOptions | None = None) -> None:
        import numpy as np

        spec = engine.spec
        self.engine = engine
        self.in_place = in_place
        self.device = engine.device
        self.capacity = capacity
        self.length = 0  # tokens in the cache
        self.fed: list[int] = []
        self._spec = spec
        self._bind = _Binding(engine.session, engine.device)
        self._run_options = run_options
        self._mask = np.ones((1, capacity), dtype=engine._mask_dtype)
        self._positions = np.arange(capacity, dtype=engine._pos_dtype).reshape(1, capacity)
        self._token = np.zeros((1, 1), dtype=engine._ids_dtype)
        self._step_logits = np.empty((1, 1, engine.vocab_size), dtype=engine._logits_dtype)
        self._logits_row = self._step_logits[0, 0]
        # Raw addresses, read once: ``ndarray.ctypes`` builds an object on every access.
        self._mask_ptr = int(self._mask.ctypes.data)
        self._pos_ptr = int(self._positions.ctypes.data)
        self._keep: list[Any] = []  # owners of the last prefill's memory bound by pointer
        self._flip = 0
        # A graph taking the attention lengths directly: two int32 buffers bound once, rewritten every step.
        self._seqlens = np.zeros((1,), dtype=np.int32)
        self._total = np.zeros((), dtype=np.int32)
        if spec.seqlens_k and spec.total_length:
            bind = self._bind
            bind.bind_input(spec.seqlens_k, bind.cpu, self._seqlens.dtype, [1], self._seqlens.ctypes.data)
            bind.bind_input(spec.total_length, bind.cpu, self._total.dtype, [], self._total.ctypes.data)
        # Per tensor: 1 buffer (in place) or 2 alternating buffers (concat), each holding `capacity` positions.
        shape = (1, spec.kv_heads, capacity, spec.head_dim)
        copies = 1 if in_place else 2
        self._kv: list[list[Any]] = [
            [self._alloc(shape) for _ in range(copies)] for _layer in spec.layers for _kv in range(2)
        ]
        self._buffers: list[list[int]] = [[self._address(owner) for owner in tensor] for tensor in self._kv]
        self.nbytes = len(self._kv) * copies * int(np.prod(shape)) * engine._kv_dtype.itemsize

    def _alloc(self, shape: tuple[int, ...]) -> Any:
        import numpy as np

        zeros = np.zeros(shape, dtype=self.engine._kv_dtype)
        if self.device == "cpu":
            return zeros
        import onnxruntime as ort

        return ort.OrtValue.ortvalue_from_numpy(zeros, self.device, 0)

    def _address(self, owner: Any) -> int:
        return int(owner.ctypes.data) if self.device == "cpu" else int(owner.data_ptr())

    # ------------------------------------------------------------------ reuse (CPU buffers)
    def _positions_of(self, tensor: int, buffer: int, length: int) -> np.ndarray:
        """The first ``length`` positions of tensor ``tensor`` (2 per layer) in its buffer ``buffer``, as the graph
        reads and writes them: ``[1, heads, length, head_dim]``, a view. In place that is a slice of the
        capacity-long buffer; a concatenating graph reads its past contiguously at its length."""
        owner = self._kv[tensor][buffer]
        if self.in_place:
            return owner[:, :, :length]
        spec = self._spec
        return owner.reshape(-1)[:spec.kv_heads * length * spec.head_dim].reshape(
            1, spec.kv_heads, length, spec.head_dim)

    def held(self, tensor: int) -> np.ndarray:
        """The keys or values held for tensor ``tensor``: a view (:meth:`_positions_of`, ``length`` of them)."""
        return self._positions_of(tensor, self._flip, self.length)

    def truncate(self, length: int) -> None:
        """Keep the first ``length`` positions (a stored run taken over by a prompt that diverges after them)."""
        if length < self.length and not self.in_place:
            # The next step reads its past contiguously at this length: rewrite it so into the other buffer.
            target = 1 - self._flip
            for tensor in range(len(self._kv)):
                self._positions_of(tensor, target, length)[...] = self.held(tensor)[:, :, :length]
            self._flip = target
        self.length = min(length, self.length)
        del self.fed[self.length:]

    def load_prefix(self, other: _Run, length: int) -> None:
        """Copy ``other``'s first ``length`` positions into this new run (where its next step reads its past)."""
        for tensor in range(len(self._kv)):
            self._positions_of(tensor, self._flip, length)[...] = other.held(tensor)[:, :, :length]
        self.length = length
        self.fed = other.fed[:length]

    # ------------------------------------------------------------------ steps
    def prefill(self, prompt_ids: Sequence[int], past: int = 0) -> np.ndarray:
        """Run the prompt after the ``past`` positions already held (which must be its first ``past`` ids);
        returns the last position's logits (valid until the next call)."""
        import numpy as np

        engine, spec, bind = self.engine, self._spec, self._bind
        bind_input, bind_output, cpu = bind.bind_input, bind.bind_output, bind.cpu
        if past != self.length:
            raise InferenceError(f"the run holds {self.length} positions, not {past}")
        n = len(prompt_ids) - past
        ids = np.asarray(prompt_ids[past:], dtype=engine._ids_dtype).reshape(1, n)
        rows = 1 if spec.last_logits_only else n
        logits = np.empty((1, rows, engine.vocab_size), dtype=engine._logits_dtype)
        self._keep = [ids]
        bind_input(spec.input_ids, cpu, ids.dtype, [1, n], ids.ctypes.data)
        bind_output(spec.logits, cpu, logits.dtype, [1, rows, engine.vocab_size], logits.ctypes.data)
        if spec.use_cache_branch:
            # An Optimum graph's "no cache yet" branch is for an empty past only.
            self._keep.append(flag := np.array([past > 0], dtype=bool))
            bind_input(spec.use_cache_branch, cpu, flag.dtype, [1], flag.ctypes.data)
        self._bind_positions(past, n)
        self._bind_cache(past, n)
        self._run()
        self.length = past + n
        self.fed[past:] = prompt_ids[past:]
        # From now on every step feeds one token and reads one logits row from fixed buffers.
        bind_input(spec.input_ids, cpu, self._token.dtype, [1, 1], self._token.ctypes.data)
        bind_output(spec.logits, cpu, self._step_logits.dtype, [1, 1, engine.vocab_size],
                    self._step_logits.ctypes.data)
        if spec.use_cache_branch:
            self._keep.append(flag := np.ones((1,), dtype=bool))
            bind_input(spec.use_cache_branch, cpu, flag.dtype, [1], flag.ctypes.data)
        return logits[0, -1]

    def decode(self, token: int, steps: int, sampler: Callable[[np.ndarray], int]) -> Iterator[int]:
        """Feed ``token``, then each sampled token, ``steps`` times; yield the sampled tokens.

        The per-token hot path, kept to a handful of local-variable operations: between two model runs the
        interpreter has to fetch its own code and objects back from memory the run pushed out of the CPU
        caches, so every attribute lookup and call frame here is paid again on every token. With an in-place
        cache a step re-binds only the attention mask's length (and positions, if the graph takes them), and
        with direct attention lengths nothing at all: it writes three integers into buffers bound once.
        """
        spec, bind, token_buffer, row = self._spec, self._bind, self._token, self._logits_row
        bind_input, run, target, options, cpu = bind.bind_input, bind.run, bind.target, self._run_options, bind.cpu
        mask_name, mask_dtype, mask_ptr = spec.attention_mask, self._mask.dtype, self._mask_ptr
        seqlens, total_length = (self._seqlens, self._total) if spec.seqlens_k else (None, None)
        positions_name, positions_dtype = spec.position_ids, self._positions.dtype
        positions_ptr, positions_step = self._pos_ptr, self._positions.itemsize
        bind_cache = None if self.in_place else self._bind_cache
        synchronize = bind.io.synchronize_outputs if self.device != "cpu" else None
        greedy = isinstance(sampler, _sampler_type()) and sampler.greedy
        fed = self.fed.append
        total = self.length
        for _ in range(steps):
            token_buffer[0, 0] = token
            fed(token)
            if seqlens is not None:
                seqlens[0] = total
                total_length[()] = total + 1
            else:
                bind_input(mask_name, cpu, mask_dtype, [1, total + 1], mask_ptr)
            if positions_name:
                bind_input(positions_name, cpu, positions_dtype, [1, 1], positions_ptr + total * positions_step)
            if bind_cache is not None:
                bind_cache(total, 1)
            run(target, options)
            if synchronize is not None:
                synchronize()
            total += 1
            self.length = total
            token = int(row.argmax()) if greedy else sampler(row)
            yield token

    def step(self, token: int) -> np.ndarray:
        """Feed one token; returns its logits row (a view of a reused buffer). :meth:`decode` is the fast loop."""
        self._token[0, 0] = token
        past = self.length
        self._bind_positions(past, 1)
        if not self.in_place:
            self._bind_cache(past, 1)
        self._run()
        self.length = past + 1
        self.fed.append(token)
        return self._logits_row

    def _run(self) -> None:
        self._bind.run(self._bind.target, self._run_options)
        if self.device != "cpu":
            self._bind.io.synchronize_outputs()

    def _bind_positions(self, past: int, new: int) -> None:
        spec, bind = self._spec, self._bind
        if spec.seqlens_k:
            self._seqlens[0] = past + new - 1
            self._total[()] = past + new
        else:
            bind.bind_input(spec.attention_mask, bind.cpu, self._mask.dtype, [1, past + new], self._mask_ptr)
        if spec.position_ids:
            pos = self._positions
            bind.bind_input(spec.position_ids, bind.cpu, pos.dtype, [1, new], self._pos_ptr + past * pos.itemsize)

    def _bind_cache(self, past: int, new: int) -> None:
        spec, dtype, bind = self._spec, self.engine._kv_dtype, self._bind
        bind_input, bind_output, kv = bind.bind_input, bind.bind_output, bind.kv
        heads, dim = spec.kv_heads, spec.head_dim
        if self.in_place:  # bound once, at prefill: same buffers and (capacity-long) shape for every step
            shape = [1, heads, self._mask.shape[1], dim]
            for layer, (key, value) in zip(spec.layers, _pairs(self._buffers), strict=True):
                for past_name, present_name, buffer in ((layer.past_key, layer.present_key, key[0]),
                                                        (layer.past_value, layer.present_value, value[0])):
                    bind_input(past_name, kv, dtype, shape, buffer)
                    bind_output(present_name, kv, dtype, shape, buffer)
            return
        source, target = self._flip, 1 - self._flip
        self._flip = target
        past_shape, present_shape = [1, heads, past, dim], [1, heads, past + new, dim]
        for layer, (key, value) in zip(spec.layers, _pairs(self._buffers), strict=True):
            bind_input(layer.past_key, kv, dtype, past_shape, key[source])
            bind_input(layer.past_value, kv, dtype, past_shape, value[source])
            bind_output(layer.present_key, kv, dtype, present_shape, key[target])
            bind_output(layer.present_value, kv, dtype, present_shape, value[target])


def _pairs(buffers: list[list[int]]) -> Iterator[tuple[list[int], list[int]]]:
    """(key buffers, value buffers) per layer from the flat per-tensor list."""
    return zip(buffers[0::2], buffers[1::2], strict=True)


def _sampler_type() -> type:
    from clawdbot.inference.onnx.sampling import Sampler

    return Sampler
