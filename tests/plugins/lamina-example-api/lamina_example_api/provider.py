"""What a notes provider implements: it tags a note's text."""

from __future__ import annotations

from typing import Protocol


class Tagger(Protocol):
    async def tags(self, text: str) -> list[str]:
        """The tags of `text`, most relevant first. Raise `lamina.bad_request` for text it cannot tag."""
        ...
