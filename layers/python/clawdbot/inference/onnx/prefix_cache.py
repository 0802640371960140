"""Finished runs' KV caches, found again by the token ids they hold: a turn's prompt starts with the last turn's.

A chat session's next prompt is its last prompt, the reply and a new message: re-running the model over the
whole history (the prefill) is most of what a turn of a short reply costs (about 70% of the server's CPU per turn
in ``bench.throughput``, a prompt of ~400 tokens). Keeping the KV cache a run leaves behind, keyed by the ids it
holds, lets the next run whose prompt shares a prefix with them compute only the rest. Stateless clients that
send the same system prompt, or the same whole prompt again, share that prefix too.

Lookup is by the longest common prefix, found through hashes of the ids in blocks of :data:`BLOCK` (chained, so a
block's key stands for everything before it): a lookup costs one hash per block of the prompt, not a comparison
with every entry. A candidate is confirmed by comparing the ids themselves (a hash collision costs a miss, never a
wrong cache), then extended token by token within its last block.

What an entry holds is opaque here (the engine's run); the cache owns it while it is stored and hands it out to
one caller at a time (:meth:`PrefixCache.take`), so no two generations ever write the same buffers. Bounded by
bytes, least recently used first out.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

#: Ids per hashed block: prefixes shorter than one block are not worth a lookup.
BLOCK = 16


@dataclass(eq=False, slots=True)
class Entry:
    """One stored run: ``ids`` are the tokens whose keys and values ``value`` holds, in order."""

    ids: list[int]
    value: Any
    nbytes: int
    keys: list[int] = field(default_factory=list)
    serial: int = 0


def block_keys(ids: Sequence[int], limit: int | None = None) -> list[int]:
    """Chained hashes of ``ids`` in whole blocks (of the first ``limit`` ids): key *i* covers ``ids[:(i+1)*BLOCK]``."""
    n = len(ids) if limit is None else min(limit, len(ids))
    keys: list[int] = []
    key = 0
    for start in range(0, n - BLOCK + 1, BLOCK):
        key = hash((key, *ids[start:start + BLOCK]))
        keys.append(key)
    return keys


def common_prefix(a: Sequence[int], b: Sequence[int], start: int = 0) -> int:
    """Length of the common prefix of ``a`` and ``b``, known to be at least ``start``."""
    n = min(len(a), len(b))
    i = start
    while i < n and a[i] == b[i]:
        i += 1
    return i


class PrefixCache:
    """Stored runs by the ids they hold, at most ``max_bytes`` of them. Thread-safe."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self.reused_tokens = 0
        self._entries: OrderedDict[int, Entry] = OrderedDict()  # serial -> entry, least recently used first
        self._by_key: dict[int, dict[int, Entry]] = {}  # block key -> entries holding that block prefix
        self._serials = itertools.count(1)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def take(self, prompt_ids: Sequence[int], usable: int) -> tuple[Entry | None, int]:
        """Remove and return the entry sharing the longest prefix with ``prompt_ids``, with that prefix's length
        capped at ``usable``; ``(None, 0)`` when none shares a whole block. The caller owns the entry until it
        :meth:`put`\\ s it (or what it became) back."""
        keys = block_keys(prompt_ids, usable)
        with self._lock:
            for index in range(len(keys) - 1, -1, -1):
                holders = self._by_key.get(keys[index])
                if not holders:
                    continue
                entry = next(reversed(holders.values()))  # the most recently stored
                known = (index + 1) * BLOCK
                if entry.ids[:known] != list(prompt_ids[:known]):
                    continue  # a hash collision: never reuse on a hash alone
                self._remove(entry)
                self.hits += 1
                common = common_prefix(entry.ids, prompt_ids[:usable], known)
                self.reused_tokens += common
                return entry, common
            self.misses += 1
            return None, 0

    def put(self, ids: list[int], value: Any, nbytes: int) -> None:
        """Store ``value`` as holding ``ids``; evicts the least recently used entries beyond ``max_bytes``. An
        entry larger than the whole cache, or one not covering a block, is not kept."""
        if nbytes > self.max_bytes or len(ids) < BLOCK:
            return
        entry = Entry(ids=ids, value=value, nbytes=nbytes, keys=block_keys(ids))
        with self._lock:
            entry.serial = next(self._serials)
            self._entries[entry.serial] = entry
            for key in entry.keys:
                self._by_key.setdefault(key, {})[entry.serial] = entry
            self.nbytes += nbytes
            while self.nbytes > self.max_bytes:
                self._remove(next(iter(self._entries.values())))

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._by_key.clear()
            self.nbytes = 0

    def _remove(self, entry: Entry) -> None:
        del self._entries[entry.serial]
        for key in entry.keys:
            holders = self._by_key[key]
            del holders[entry.serial]
            if not holders:
                del self._by_key[key]
        self.nbytes -= entry.nbytes
