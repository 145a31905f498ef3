"""Does the exported file run the same model? Read it back with transformers, compare with the source.

The reader is a client Forge did not write: ``AutoModelForCausalLM`` / ``AutoTokenizer`` with
``gguf_file=`` (transformers dequantizes every ggml block type to float32 as it loads) or
``from_pretrained`` on the HF directory. The texts are real task-suite rows: the first N of each
task's validation split, prompt and answer. Figures:

* ``max_abs_logit_diff`` and ``top1_agreement`` over every position of every text (each text runs
  alone, so no position is padding), both models fed the source tokenizer's ids;
* ``tokenizer_match``: the fraction of texts the exported tokenizer encodes to the same ids;
* ``greedy_match``: the fraction of prompts whose greedy continuation (``max_new_tokens``,
  generated from each model's own tokenization) is the same.
"""

from __future__ import annotations

from pathlib import Path

import torch

from forgelib.errors import ForgeError


def check_rows(data_dir: str | Path, per_task: int) -> list[dict]:
    """The first ``per_task`` validation rows of each task in ``data_dir`` (``prompt``, ``answer``)."""
    from forgelib.data.tasks import load_tasks

    rows = []
    for splits in load_tasks(data_dir).values():
        validation = splits["validation"]
        rows += [dict(row) for row in validation.select(range(min(per_task, len(validation))))]
    if not rows:
        raise ForgeError(f"{data_dir}: no validation rows to check the export on")
    return rows


def load_exported(path: str | Path, fmt: str):
    """``(model, tokenizer)`` read by transformers alone from an exported GGUF file or HF directory."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    where, extra = (path.parent, {"gguf_file": path.name}) if fmt == "gguf" else (path, {})
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(where), **extra)
        model = AutoModelForCausalLM.from_pretrained(str(where), dtype=torch.float32, **extra)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ForgeError(f"{path}: transformers cannot read the export ({' '.join(str(exc).split())})") from None
    return model.eval(), tokenizer


@torch.no_grad()
def logit_agreement(reference, candidate, id_lists: list[list[int]]) -> dict:
    """Max |logit difference| and top-1 agreement of two models over every position of ``id_lists``."""
    max_diff, agree, positions = 0.0, 0, 0
    for ids in id_lists:
        x = torch.tensor([ids])
        a, b = reference(input_ids=x).logits[0].float(), candidate(input_ids=x).logits[0].float()
        max_diff = max(max_diff, (a - b).abs().max().item())
        agree += int((a.argmax(-1) == b.argmax(-1)).sum())
        positions += len(ids)
    return {"max_abs_logit_diff": max_diff, "top1_agreement": agree / positions, "positions": positions}


@torch.no_grad()
def greedy(model, tokenizer, prompt: str, max_new_tokens: int) -> str:
    x = torch.tensor([tokenizer(prompt)["input_ids"]])
    out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=max_new_tokens,
                         do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, x.shape[1]:], skip_special_tokens=True)


def check_export(path: str | Path, fmt: str, model, tokenizer, rows: list[dict], *, max_new_tokens: int = 8) -> dict:
    """Figures of the export at ``path`` against the source ``model`` / ``tokenizer`` on ``rows``."""
    import transformers

    exported, exported_tokenizer = load_exported(path, fmt)
    texts = [row["prompt"] + row["answer"] for row in rows]
    ids = [tokenizer(text)["input_ids"] for text in texts]
    same_ids = sum(exported_tokenizer(text)["input_ids"] == expected for text, expected in zip(texts, ids))
    same_greedy = sum(greedy(model, tokenizer, row["prompt"], max_new_tokens)
                      == greedy(exported, exported_tokenizer, row["prompt"], max_new_tokens) for row in rows)
    return {"reader": f"transformers {transformers.__version__}", "texts": len(texts),
            **logit_agreement(model, exported, ids), "tokenizer_match": same_ids / len(texts),
            "greedy_match": same_greedy / len(rows), "max_new_tokens": max_new_tokens}
