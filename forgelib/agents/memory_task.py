"""Key-value recall beyond the context window: the task where only a memory can answer.

An **episode** is a stream of ``stream_chars`` characters holding ``n_facts`` facts
``KEY:VALUE`` (a key is a letter and a digit, e.g. ``b7``; a value is one digit), each with a space
on both sides, in filler of random lower-case letters and spaces (no digits, so the filler never
looks like a fact). Keys are distinct within an episode. After the stream comes one query,
``(b7:``, whose answer is the value of fact ``b7``. The **distance** ``D`` is the number of stream
characters between the end of the queried fact and the query: the fact is ``stream[-D-4:-D]``.

Two kinds of fact, so that a surprise gate has something to choose:

- **derivable**: the value is the key's digit (``b7:7``), a default rule the model learns, so it
  can answer without having seen the fact (low loss);
- **exception**: the value is another digit, drawn uniformly (``b7:3``), unpredictable without
  the fact (high loss).

The queried fact is an exception with probability ``target_exception_rate`` (0.5), every other
fact with ``exception_rate`` (1/3). A model that sees only a window of the last ``W`` characters
can answer from the window when ``D + 4 <= W`` and otherwise only by the rule, i.e. right on
derivable targets and wrong on exceptions; a memory holding the fact recovers the exceptions.

The model's view of an episode is ``[SLOT]`` + ``window`` + ``(KEY:`` (:func:`model_prompt`):
``SLOT`` is a retrieved fact (``[c4:1]``) or empty (``[]``). The query ends like the fact it asks
about (``b7:``), so answering from the window is the copy-what-followed pattern of in-context
recall. With the embedded default's 64 positions, ``1 + 6 + W + 4 + 1 + 1 = 64`` (``<bos>``, a
full slot, the window, the query, the 1-character answer, ``<eos>``) gives a window of ``W = 51``
characters; full attention, with an empty slot, has 55. The standard distances are 16 (inside both
windows), 48 (the fact needs ``D + 4 = 52`` characters: outside the 51-character window, which
holds its ``:VALUE`` but not its key, and inside full attention's 55), 128 and 512 (beyond any
64-position context).

Episodes are seeded by ``(split, distance, seed, index)``, so train, validation and test episodes
never share a random stream and each is reproducible on its own.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass

from forgelib.errors import ForgeError

DISTANCES = (16, 48, 128, 512)
"""The distances reported by the memory arms (see the module doc for what each means)."""
FACT_CHARS = 4
"""``KEY:VALUE`` is 4 characters."""
QUERY_CHARS = 5
"""``(KEY:`` is 4 characters and the answer 1; used by :func:`window_chars`."""
SLOT_CHARS = 2 + FACT_CHARS
"""``[KEY:VALUE]`` at most."""
FILLER = string.ascii_lowercase + "     "  # about one space in six


@dataclass(frozen=True)
class Fact:
    key: str
    value: str
    start: int
    """Index of the key's first character in the stream."""

    @property
    def exception(self) -> bool:
        return self.value != derivable_value(self.key)

    @property
    def text(self) -> str:
        return f"{self.key}:{self.value}"


@dataclass(frozen=True)
class Episode:
    stream: str
    facts: tuple[Fact, ...]
    """In stream order."""
    target: int
    """Index into ``facts`` of the queried fact."""
    distance: int

    @property
    def target_fact(self) -> Fact:
        return self.facts[self.target]

    @property
    def answer(self) -> str:
        return self.target_fact.value


def derivable_value(key: str) -> str:
    """The default rule: a fact's value is its key's digit."""
    return key[1]


def window_chars(max_positions: int, *, slot: bool = True) -> int:
    """Stream characters that fit in ``max_positions`` next to ``<bos>``, the slot (a full one, or
    ``[]`` when ``slot`` is False), the query, the answer and ``<eos>``."""
    return max_positions - 2 - (SLOT_CHARS if slot else 2) - QUERY_CHARS


def model_prompt(slot_fact: str | None, window: str, key: str) -> str:
    """``[SLOT]WINDOW(KEY:``: what the model sees when asked for ``key``."""
    return f"[{slot_fact or ''}]{window}({key}:"


def make_episode(rng: random.Random, *, distance: int, n_facts: int = 12, stream_chars: int = 600,
                 exception_rate: float = 1 / 3, target_exception_rate: float = 0.5) -> Episode:
    """One episode whose queried fact ends ``distance`` characters before the query."""
    if distance < 1 or distance + FACT_CHARS + 1 > stream_chars:
        raise ForgeError(f"memory task: distance {distance} must be in 1..{stream_chars - FACT_CHARS - 1} "
                         f"(stream_chars {stream_chars}); raise stream_chars or lower the distance")
    if not 1 <= n_facts <= 260:
        raise ForgeError(f"memory task: n_facts must be in 1..260 (distinct letter-digit keys), got {n_facts}")
    keys = rng.sample([a + d for a in string.ascii_lowercase for d in string.digits], n_facts)
    # A fact at s occupies s..s+3 and needs spaces at s-1 and s+4: claim s-1..s+4.
    target_start = stream_chars - distance - FACT_CHARS
    claimed = set(range(target_start - 1, target_start + FACT_CHARS + 1))
    starts = [target_start]
    for _ in range(n_facts - 1):
        for _attempt in range(10_000):
            s = rng.randrange(0, stream_chars - FACT_CHARS + 1)
            span = set(range(s - 1, s + FACT_CHARS + 1))
            if not span & claimed:
                claimed |= span
                starts.append(s)
                break
        else:
            raise ForgeError(f"memory task: cannot place {n_facts} facts in {stream_chars} characters; "
                             "raise stream_chars or lower n_facts")
    chars = rng.choices(FILLER, k=stream_chars)
    facts = []
    for i, (key, start) in enumerate(zip(keys, starts)):
        rate = target_exception_rate if i == 0 else exception_rate
        value = derivable_value(key)
        if rng.random() < rate:
            value = rng.choice([d for d in string.digits if d != value])
        facts.append(Fact(key, value, start))
        for offset, ch in enumerate(f" {key}:{value} ", start=-1):
            if 0 <= start + offset < stream_chars:
                chars[start + offset] = ch
    ordered = sorted(facts, key=lambda f: f.start)
    return Episode("".join(chars), tuple(ordered), ordered.index(facts[0]), distance)


def episodes(split: str, distance: int, n: int, seed: int, **settings) -> list[Episode]:
    """``n`` reproducible episodes at ``distance``; ``settings`` go to :func:`make_episode`."""
    return [make_episode(random.Random(f"memory:{split}:{distance}:{seed}:{i}"), distance=distance, **settings)
            for i in range(n)]
