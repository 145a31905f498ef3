"""Model cards: the README.md of every directory Forge writes (trained, merged, imported, decoded).

A card is a dict. Its YAML front matter is machine-readable (``read_card`` gives it back); the
body repeats the readable parts: the name, the description, then one section per key of
``SECTIONS`` that the card has. Cards are built in layers (a writer's defaults, then what its
caller adds) and layers are merged deeply: a caller that adds ``params.seed`` keeps the
writer's ``params.train`` instead of replacing the whole ``params`` dict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import yaml

DEFAULTS = {"library_name": "transformers", "tags": ["forge"]}
SECTIONS = ("parents", "data", "recipe", "params", "metrics")
"""Keys rendered as their own section of the body, in this order."""
BODY_ONLY = ("description",)
"""Keys kept out of the front matter: the description is the body's prose."""


def merge_cards(*layers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Deep merge: dicts merge key by key, anything else (lists included) is replaced by later layers."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
                out[key] = merge_cards(out[key], value)
            else:
                out[key] = dict(value) if isinstance(value, Mapping) else value
    return out


def render_card(*layers: Mapping[str, Any] | None) -> str:
    """README.md text of the deep-merged ``layers`` (on top of ``DEFAULTS``)."""
    card = merge_cards(DEFAULTS, *layers)
    front = {k: v for k, v in card.items() if k not in BODY_ONLY}
    lines = ["---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", ""]
    lines.append(f"# {card.get('name', 'Forge model')}")
    lines.append("")
    lines.append(card.get("description", "Built by Forge."))
    for key in SECTIONS:
        if key in card:
            lines += ["", f"## {key.capitalize()}", "", "```yaml", yaml.safe_dump(card[key], sort_keys=False).rstrip(), "```"]
    return "\n".join(lines) + "\n"


def write_card(directory: str | Path, *layers: Mapping[str, Any] | None) -> Path:
    """Write ``directory/README.md`` from the deep-merged ``layers``."""
    path = Path(directory) / "README.md"
    path.write_text(render_card(*layers))
    return path


def read_card(directory: str | Path) -> dict[str, Any]:
    """The YAML front matter of a directory's model card (empty if there is none)."""
    readme = Path(directory) / "README.md"
    if not readme.is_file():
        return {}
    text = readme.read_text()
    if not text.startswith("---"):
        return {}
    return yaml.safe_load(text.split("---", 2)[1]) or {}
