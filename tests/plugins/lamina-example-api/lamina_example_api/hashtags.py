"""inline::hashtags, a notes provider: a note's tags are its #words."""

from __future__ import annotations

import re

import lamina

HASHTAG = re.compile(r"#(\w+)")


class HashtagsConfig(lamina.ProviderConfig):
    lowercase: bool = True


class Hashtags:
    def __init__(self, config: HashtagsConfig) -> None:
        self.lowercase = config.lowercase

    async def tags(self, text: str) -> list[str]:
        found = HASHTAG.findall(text)
        return list(dict.fromkeys(tag.lower() if self.lowercase else tag for tag in found))


async def create(config: HashtagsConfig, deps: lamina.Deps) -> Hashtags:
    return Hashtags(config)
