"""Words in messages: counts with their noun in the right number ("1 sequence", "2 runs")."""

from __future__ import annotations


def plural(n: int, word: str) -> str:
    """`n` and `word`, with an s unless n is 1."""
    return f"{n:,} {word}" + ("" if n == 1 else "s")


__all__ = ["plural"]
