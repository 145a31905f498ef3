"""The embedded default's task suite: modular arithmetic, addition, string and logic tasks.

Each level widens the input range. Modular tasks raise the modulus with the level and reach
p = 97 (Power et al. 2022; Grokfast's showcase) at the top level. Prompts carry a short task
prefix so one model can tell the tasks apart; all inputs are character strings so the
character-level tokenizer covers them.
"""

from __future__ import annotations

import random

from forgelib.data.tasks.base import TaskGenerator

MODULI = (7, 23, 47, 97)
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _length_range(level: int) -> tuple[int, int]:
    """Sequence tasks: level L uses lengths 2 .. 2 + 2L."""
    return 2, 2 + 2 * level


def _modular(op: str) -> TaskGenerator:
    def sample(level: int, rng: random.Random) -> tuple[str, str]:
        p = MODULI[level - 1]
        x = rng.randrange(p)
        # y starts at 1 for multiplication, as in the Grokfast setup (x*0 is trivial).
        y = rng.randrange(1 if op == "*" else 0, p)
        return f"{x}{op}{y}%{p}=", answer(f"{x}{op}{y}%{p}=")

    def answer(prompt: str) -> str:
        expr, p = prompt.rstrip("=").split("%")
        x, y = (int(v) for v in expr.split(op))
        return str((x * y if op == "*" else x + y) % int(p))

    def space(level: int) -> int:
        p = MODULI[level - 1]
        return p * (p - 1 if op == "*" else p)

    name = "mod_mul" if op == "*" else "mod_add"
    return TaskGenerator(name, "modular", len(MODULI), sample, space, answer)


def _addition() -> TaskGenerator:
    def sample(level: int, rng: random.Random) -> tuple[str, str]:
        hi = 10 ** (level + 1)
        x, y = rng.randrange(hi), rng.randrange(hi)
        return f"{x}+{y}=", str(x + y)

    def answer(prompt: str) -> str:
        x, y = prompt.rstrip("=").split("+")
        return str(int(x) + int(y))

    return TaskGenerator("add", "arithmetic", 4, sample, lambda lv: 10 ** (2 * (lv + 1)), answer)


def _sequence(name: str, family: str, prefix: str, alphabet: str, fn) -> TaskGenerator:
    def sample(level: int, rng: random.Random) -> tuple[str, str]:
        lo, hi = _length_range(level)
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(lo, hi)))
        return f"{prefix}:{text}=", fn(text)

    def answer(prompt: str) -> str:
        return fn(prompt[len(prefix) + 1 : -1])

    def space(level: int) -> int:
        lo, hi = _length_range(level)
        return sum(len(alphabet) ** n for n in range(lo, hi + 1))

    return TaskGenerator(name, family, 4, sample, space, answer)


def _is_balanced(text: str) -> bool:
    pairs, stack = {")": "(", "]": "["}, []
    for ch in text:
        if ch in "([":
            stack.append(ch)
        elif not stack or stack.pop() != pairs[ch]:
            return False
    return not stack


def _brackets() -> TaskGenerator:
    """Balanced-bracket recognition; half the samples are balanced by construction, since a
    uniformly random string is almost never balanced and the task would collapse to "no"."""

    def balanced(n_pairs: int, rng: random.Random) -> str:
        out, stack, opened = [], [], 0
        while opened < n_pairs or stack:
            if opened < n_pairs and (not stack or rng.random() < 0.5):
                ch = rng.choice("([")
                out.append(ch)
                stack.append(ch)
                opened += 1
            else:
                out.append(")" if stack.pop() == "(" else "]")
        return "".join(out)

    def sample(level: int, rng: random.Random) -> tuple[str, str]:
        n_pairs = rng.randint(1, 1 + level)
        text = balanced(n_pairs, rng)
        if rng.random() < 0.5:
            chars = list(text)
            i = rng.randrange(len(chars))
            chars[i] = rng.choice([c for c in "()[]" if c != chars[i]])
            text = "".join(chars)
        return f"bal:{text}=", answer(f"bal:{text}=")

    def answer(prompt: str) -> str:
        return "yes" if _is_balanced(prompt[4:-1]) else "no"

    def space(level: int) -> int:
        return sum(4 ** (2 * n) for n in range(1, 2 + level))

    return TaskGenerator("brackets", "logic", 4, sample, space, answer)


def running_parity(bits: str) -> str:
    """Parity with a scratchpad: the answer is the parity of every prefix, so its last character
    is the parity of the whole string. Plain one-token parity is a known failure case for small
    transformers trained by gradient descent (they memorise, test accuracy stays at chance);
    emitting the running state makes each output token a function of one input bit and the
    previous output token, which is learnable (Anil et al. 2022, length generalisation)."""
    out, acc = [], 0
    for bit in bits:
        acc ^= bit == "1"
        out.append(str(acc))
    return "".join(out)


def all_generators() -> list[TaskGenerator]:
    return [
        _modular("+"),
        _modular("*"),
        _addition(),
        _sequence("reverse", "string", "rev", LETTERS, lambda s: s[::-1]),
        _sequence("copy", "string", "cpy", LETTERS, lambda s: s),
        _sequence("sort_digits", "string", "srt", "0123456789", lambda s: "".join(sorted(s))),
        _sequence("parity", "logic", "par", "01", running_parity),
        _brackets(),
    ]
