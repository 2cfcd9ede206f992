"""Prompt text as the CLI and the app take it: ``"a dog:dog, puppy:dog, person"``."""

from __future__ import annotations

__all__ = ["parse_prompt"]


def parse_prompt(text: str) -> dict[str, str]:
    """``"a dog:dog, puppy:dog, person"`` -> ``{"a dog": "dog", "puppy": "dog", "person": "person"}``
    (``caption[:class]``, comma-separated; the class defaults to the caption). Raises ``ValueError``
    for an empty caption or no captions at all."""
    out: dict[str, str] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        caption, _, name = part.partition(":")
        caption, name = caption.strip(), (name.strip() or caption.strip())
        if not caption:
            raise ValueError(f"empty caption in {part!r}")
        out[caption] = name
    if not out:
        raise ValueError("no captions given")
    return out
