"""A Quiet-STaR thinking model: a causal LM, two thought tokens and a mixing head.

Zelikman et al. 2024 (arXiv 2403.09629), as this model implements it:

- ``<|startthought|>`` and ``<|endthought|>`` are added to the tokenizer; their embedding rows
  start as the embedding of ``-`` (the paper starts from the em dash, which the character
  alphabet lacks; ``-`` is its nearest character);
- a thought is ``thought_tokens`` tokens sampled from the model itself between the two markers,
  drawn from the tokenizer's ordinary tokens (no special tokens);
- the mixing head is an MLP on the concatenated last hidden states without and with the
  thought, giving one weight per position; its output layer starts at zero, so the mixed
  prediction is exactly the base model's until training moves it
  (:func:`forgelib.quietstar.objective.mix_logits`).

**Deviation, for a CPU budget:** the paper thinks after every token of the text, in parallel;
this model thinks once per prompt, at the answer position (right after the prompt's ``=``),
and the thought's effect is scored on the answer that follows. The thought markers are never
predicted as answer tokens (their logits are masked, as the reference code's inference does).

At inference the thought is decoded greedily, then hidden: :meth:`ThinkingModel.answers`
returns the answer text, and the thought only when asked. The greedy answer is decoded from
the mixed logits, so plain ``transformers`` (which has no mixing head) cannot reproduce it;
report the plain weights' and the thinking model's figures separately.

On disk a thinking model is a Hugging Face directory (the thought tokens are in its tokenizer)
plus ``mixing_head.safetensors`` and ``quietstar.json`` (the thought settings).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from forgelib.errors import ForgeError
from forgelib.eval.evaluate import evaluate_answers
from forgelib.io import atomic_dir, read_json, write_json
from forgelib.models.card import write_card
from forgelib.models.hf import load_model
from forgelib.quietstar.decoding import decode_answers, greedy_continue, last_hidden, left_pad, positions, right_pad
from forgelib.quietstar.objective import mix_logits, token_nll

START, END = "<|startthought|>", "<|endthought|>"
INIT_TOKEN = "-"
HEAD_FILE = "mixing_head.safetensors"
SETTINGS_FILE = "quietstar.json"
FORMAT = "forge-quietstar/1"


def is_thinking(model_dir: str | Path) -> bool:
    """Whether ``model_dir`` holds a thinking model (its mixing head and thought settings)."""
    return (Path(model_dir) / SETTINGS_FILE).is_file() and (Path(model_dir) / HEAD_FILE).is_file()


class MixingHead(nn.Module):
    """``w = out(relu(hidden([h_base; h_thought])))``, one weight per position; starts at w = 0."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.hidden = nn.Linear(2 * hidden_size, hidden_size)
        self.out = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, h_base: Tensor, h_thought: Tensor) -> Tensor:
        return self.out(torch.relu(self.hidden(torch.cat([h_base, h_thought], dim=-1))))  # (..., 1)


def add_special_token(lm, tokenizer, tokens: Sequence[str], like: str = INIT_TOKEN) -> list[int]:
    """Add ``tokens`` to ``tokenizer`` and rows for them to ``lm``'s tables, initialised to ``like``'s rows."""
    like_id = tokenizer.convert_tokens_to_ids(like)
    if like_id is None or like_id == tokenizer.unk_token_id:
        raise ForgeError(f"tokenizer has no token {like!r} to initialise {', '.join(tokens)} from")
    tokenizer.add_special_tokens({"additional_special_tokens": list(tokens)})
    lm.resize_token_embeddings(max(len(tokenizer), lm.get_input_embeddings().weight.shape[0]), mean_resizing=False)
    ids = tokenizer.convert_tokens_to_ids(list(tokens))
    with torch.no_grad():
        for table in (lm.get_input_embeddings().weight, lm.get_output_embeddings().weight):
            table[ids] = table[like_id].clone()
    return ids


class ThinkingModel:
    """A causal LM that thinks ``thought_tokens`` tokens at the answer position (see the module doc)."""

    def __init__(self, lm, tokenizer, head: MixingHead, *, thought_tokens: int):
        self.lm, self.tokenizer, self.head = lm, tokenizer, head
        self.thought_tokens = thought_tokens
        self.start_id, self.end_id = tokenizer.convert_tokens_to_ids([START, END])
        vocab = lm.get_output_embeddings().weight.shape[0]
        special = set(tokenizer.all_special_ids) | {self.start_id, self.end_id}
        self.thought_vocab = torch.tensor([i for i in range(len(tokenizer)) if i not in special])
        """Token ids a thought may contain: the tokenizer's ordinary tokens."""
        self.answer_banned = torch.zeros(vocab, dtype=torch.bool)
        self.answer_banned[[self.start_id, self.end_id]] = True
        self._thought_allowed = torch.zeros(vocab, dtype=torch.bool)
        self._thought_allowed[self.thought_vocab] = True

    @classmethod
    def from_base(cls, lm, tokenizer, *, thought_tokens: int, seed: int = 0) -> "ThinkingModel":
        """Add the thought tokens to a plain LM and a fresh mixing head (w = 0: the base model)."""
        add_special_token(lm, tokenizer, [START, END])
        torch.manual_seed(seed)
        return cls(lm, tokenizer, MixingHead(lm.config.hidden_size), thought_tokens=thought_tokens)

    def parameters(self) -> list[nn.Parameter]:
        return [*self.lm.parameters(), *self.head.parameters()]

    def train(self, mode: bool = True) -> "ThinkingModel":
        self.lm.train(mode)
        self.head.train(mode)
        return self

    # -- the two branches and their mix ------------------------------------------------------

    def logits(self, hidden: Tensor) -> Tensor:
        return self.lm.get_output_embeddings()(hidden)

    def mixed_logits(self, h_base: Tensor, h_thought: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(base logits, mixed logits, weight) of answer positions; thought markers never predicted."""
        base = self.logits(h_base)
        weight = self.head(h_base, h_thought)
        mixed = mix_logits(base, self.logits(h_thought), weight)
        banned = self.answer_banned
        return base.masked_fill(banned, float("-inf")), mixed.masked_fill(banned, float("-inf")), weight

    def thought_log_probs(self, logits: Tensor, temperature: float = 1.0) -> Tensor:
        """Log-probabilities of the next thought token: ordinary tokens only, at ``temperature``."""
        return torch.log_softmax((logits / temperature).masked_fill(~self._thought_allowed, float("-inf")), dim=-1)

    def with_thought(self, prompt_ids: Tensor, prompt_mask: Tensor, thoughts: Tensor) -> tuple[Tensor, Tensor]:
        """``prompt <|startthought|> thought <|endthought|>`` as (ids, mask)."""
        n = prompt_ids.shape[0]
        start = torch.full((n, 1), self.start_id, dtype=torch.long)
        end = torch.full((n, 1), self.end_id, dtype=torch.long)
        ids = torch.cat([prompt_ids, start, thoughts, end], dim=1)
        return ids, torch.cat([prompt_mask, torch.ones((n, thoughts.shape[1] + 2), dtype=torch.long)], dim=1)

    @torch.no_grad()
    def sample_thoughts(self, prompt_ids: Tensor, prompt_mask: Tensor, *, mode: str = "greedy",
                        temperature: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
        """(N, thought_tokens) thought ids after each left-padded prompt.

        ``mode``: ``sample`` (from the model at ``temperature``; training), ``greedy`` (inference)
        or ``random`` (uniform over the thought vocabulary: the random_thoughts control)."""
        n, m = prompt_ids.shape[0], self.thought_tokens
        if mode == "random":
            return self.thought_vocab[torch.randint(len(self.thought_vocab), (n, m), generator=generator)]
        if mode not in ("sample", "greedy"):
            raise ValueError(f"unknown thought mode {mode!r}; valid: sample, greedy, random")
        start = torch.full((n, 1), self.start_id, dtype=torch.long)
        ids, mask = torch.cat([prompt_ids, start], 1), torch.cat([prompt_mask, torch.ones_like(start)], 1)
        pos = positions(mask)
        out = self.lm.base_model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
        tokens = []
        for i in range(m):  # one new token per step; the cache holds the prefix's keys and values
            logp = self.thought_log_probs(self.logits(out.last_hidden_state[:, -1]), temperature)
            nxt = logp.argmax(-1) if mode == "greedy" else torch.multinomial(logp.exp(), 1, generator=generator)[:, 0]
            tokens.append(nxt)
            if i + 1 < m:
                mask, pos = torch.cat([mask, torch.ones_like(start)], 1), pos[:, -1:] + 1
                out = self.lm.base_model(input_ids=nxt[:, None], attention_mask=mask, position_ids=pos,
                                         cache=out.cache, use_cache=True)
        thoughts = torch.stack(tokens, dim=1)
        return thoughts

    def forward_answers(self, prompt_ids: Tensor, prompt_mask: Tensor, thoughts: Tensor, answer_ids: Tensor,
                        answer_mask: Tensor) -> dict[str, Tensor]:
        """Teacher-forced answers without and with each thought.

        prompt (B, P) left-padded; thoughts (B*n, m), rows ``b*n .. b*n+n-1`` for prompt b;
        answer (B, A) right-padded, ``<eos>`` included. Returns ``base_logits`` (B, A, V),
        ``mixed_logits`` (B*n, A, V), ``weight`` (B*n, A, 1) and ``policy_logits`` (B*n, m, V),
        the logits that sampled each thought token."""
        b, p = prompt_ids.shape
        n, m, a = thoughts.shape[0] // b, thoughts.shape[1], answer_ids.shape[1]
        h_base = last_hidden(self.lm, torch.cat([prompt_ids, answer_ids], 1), torch.cat([prompt_mask, answer_mask], 1))
        h_base = h_base[:, p - 1 : p - 1 + a]  # column p-1+j predicts answer token j
        rep = lambda t: t.repeat_interleave(n, dim=0)  # noqa: E731
        ids, mask = self.with_thought(rep(prompt_ids), rep(prompt_mask), thoughts)
        h_all = last_hidden(self.lm, torch.cat([ids, rep(answer_ids)], 1), torch.cat([mask, rep(answer_mask)], 1))
        h_thought = h_all[:, p + m + 1 : p + m + 1 + a]  # the end marker predicts answer token 0
        base, mixed, weight = self.mixed_logits(rep(h_base), h_thought)
        return {"base_logits": base[::n], "mixed_logits": mixed, "weight": weight,
                "policy_logits": self.logits(h_all[:, p : p + m])}  # the start marker predicts token 1

    # -- inference ---------------------------------------------------------------------------

    def _prompts(self, prompts: Sequence[str]) -> tuple[Tensor, Tensor]:
        return left_pad([self.tokenizer(p)["input_ids"] for p in prompts], self.tokenizer.pad_token_id)

    @torch.no_grad()
    def answers(self, prompts: Sequence[str], *, max_new_tokens: int, batch_size: int = 256,
                return_thoughts: bool = False, thoughts: str = "greedy", seed: int = 0) -> list:
        """Think, then greedily answer each prompt; the thought is hidden from the answer.

        ``return_thoughts``: ``(answer, thought)`` pairs instead of answers. ``thoughts``: how
        thoughts are made (``greedy``; ``random`` for the random-thoughts control, seeded)."""
        was_training = self.lm.training
        self.train(False)
        generator = torch.Generator().manual_seed(seed)
        out: list = []
        for start in range(0, len(prompts), batch_size):
            ids, mask = self._prompts(prompts[start : start + batch_size])
            thought = self.sample_thoughts(ids, mask, mode=thoughts, generator=generator)
            t_ids, t_mask = self.with_thought(ids, mask, thought)

            def next_logits(generated: Tensor) -> Tensor:
                ones = torch.ones_like(generated)
                h_base = last_hidden(self.lm, torch.cat([ids, generated], 1), torch.cat([mask, ones], 1))[:, -1]
                h_thought = last_hidden(self.lm, torch.cat([t_ids, generated], 1), torch.cat([t_mask, ones], 1))[:, -1]
                return self.mixed_logits(h_base, h_thought)[1]

            tokens = greedy_continue(next_logits, len(ids), max_new_tokens=max_new_tokens,
                                     eos_id=self.tokenizer.eos_token_id, pad_id=self.tokenizer.pad_token_id)
            texts = decode_answers(self.tokenizer, tokens)
            if return_thoughts:
                out += list(zip(texts, self.tokenizer.batch_decode(thought)))
            else:
                out += texts
        self.train(was_training)
        return out

    @torch.no_grad()
    def answer_nll(self, rows: Sequence[dict], *, batch_size: int = 256) -> tuple[list[float], list[int]]:
        """Per row: summed NLL of ``answer <eos>`` under the mixed prediction after the greedy thought, and its token count."""
        was_training = self.lm.training
        self.train(False)
        nll, counts = [], []
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            ids, mask = self._prompts([r["prompt"] for r in chunk])
            answers = [self.tokenizer(r["answer"], add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]
                       for r in chunk]
            a_ids, a_mask = right_pad(answers, self.tokenizer.pad_token_id)
            thought = self.sample_thoughts(ids, mask, mode="greedy")
            out = self.forward_answers(ids, mask, thought, a_ids, a_mask)
            nll += token_nll(out["mixed_logits"], a_ids, a_mask).sum(dim=1).tolist()
            counts += a_mask.sum(dim=1).tolist()
        self.train(was_training)
        return nll, counts

    def evaluate(self, tasks: Mapping, split: str = "test", *, limit: int | None = None, batch_size: int = 256) -> dict:
        """:func:`forgelib.eval.evaluate.evaluate_model`'s result, thinking: exact match of the
        thinking answers and the perplexity of the mixed prediction after the greedy thought."""
        return evaluate_answers(lambda prompts, budget: self.answers(prompts, max_new_tokens=budget, batch_size=batch_size),
                                tasks, split=split, limit=limit,
                                nll_fn=lambda rows: self.answer_nll(rows, batch_size=batch_size))

    # -- disk --------------------------------------------------------------------------------

    def settings(self) -> dict:
        return {"format": FORMAT, "thought_tokens": self.thought_tokens, "start_token": START, "end_token": END,
                "thought_position": "answer (after the prompt)", "inference_thoughts": "greedy",
                "mixing_head": {"file": HEAD_FILE, "hidden_size": self.head.out.in_features,
                                "input": "concat(last hidden without thought, last hidden with thought)",
                                "mix": "(1 - w) * base_logits + w * thought_logits"}}

    def save(self, out_dir: str | Path, *cards: Mapping | None) -> Path:
        """Write the HF directory, ``mixing_head.safetensors``, ``quietstar.json`` and the card, atomically."""
        out_dir = Path(out_dir)
        with atomic_dir(out_dir) as tmp:
            self.lm.save_pretrained(str(tmp), safe_serialization=True)
            self.tokenizer.save_pretrained(str(tmp))
            save_file({k: v.detach().contiguous() for k, v in self.head.state_dict().items()}, str(tmp / HEAD_FILE),
                      metadata={"format": "pt"})
            write_json(tmp / SETTINGS_FILE, self.settings())
            write_card(tmp, *cards)
        return out_dir

    @classmethod
    def load(cls, model_dir: str | Path) -> "ThinkingModel":
        model_dir = Path(model_dir)
        if not is_thinking(model_dir):
            raise ForgeError(f"{model_dir}: not a thinking model (needs {SETTINGS_FILE} and {HEAD_FILE} beside the "
                             "weights); write one with the quietstar stage")
        lm, tokenizer = load_model(model_dir)
        settings = read_json(model_dir / SETTINGS_FILE)
        if not isinstance(settings, dict) or settings.get("format") != FORMAT or not isinstance(settings.get("thought_tokens"), int):
            raise ForgeError(f"{model_dir / SETTINGS_FILE}: expected format {FORMAT!r} with an integer thought_tokens; "
                             "re-run the quietstar stage")
        missing = [t for t in (START, END) if tokenizer.convert_tokens_to_ids(t) in (None, tokenizer.unk_token_id)]
        if missing:
            raise ForgeError(f"{model_dir}: the tokenizer lacks the thought token {missing[0]}; re-run the quietstar stage")
        head = MixingHead(lm.config.hidden_size)
        try:
            head.load_state_dict(load_file(str(model_dir / HEAD_FILE)))
        except (RuntimeError, OSError) as exc:
            raise ForgeError(f"{model_dir / HEAD_FILE}: not this model's mixing head ({' '.join(str(exc).split())[:200]})") from None
        head.eval()
        return cls(lm, tokenizer, head, thought_tokens=settings["thought_tokens"])
