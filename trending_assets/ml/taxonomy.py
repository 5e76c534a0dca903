"""Canonical genre taxonomy: raw platform tags -> canonical genres."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


class TaxonomyError(ValueError):
    """The taxonomy file is inconsistent (a tag listed twice, an empty genre, ...)."""


@dataclass(frozen=True)
class Taxonomy:
    """Maps each known raw tag to a canonical genre, or to None when the tag is dropped."""

    genres: tuple[str, ...]
    mapping: Mapping[str, str | None]
    min_support: int

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Taxonomy:
        genres_cfg = config.get("genres")
        if not isinstance(genres_cfg, Mapping) or not genres_cfg:
            raise TaxonomyError("taxonomy: 'genres' must map each canonical genre to its raw tags")
        mapping: dict[str, str | None] = {}

        def claim(tag: Any, target: str | None) -> None:
            if not isinstance(tag, str) or not tag.strip():
                raise TaxonomyError(f"taxonomy: raw tag {tag!r} under {target!r} is not a string")
            if tag in mapping:
                raise TaxonomyError(
                    f"taxonomy: raw tag {tag!r} is listed twice ({mapping[tag]!r} and {target!r})"
                )
            mapping[tag] = target

        for genre, tags in genres_cfg.items():
            if not tags:
                raise TaxonomyError(f"taxonomy: genre {genre!r} lists no raw tags")
            for tag in tags:
                claim(tag, str(genre))
        for tag in config.get("drop") or []:
            claim(tag, None)
        min_support = int(config.get("min_support", 1))
        if min_support < 1:
            raise TaxonomyError("taxonomy: 'min_support' must be at least 1")
        return cls(tuple(str(g) for g in genres_cfg), mapping, min_support)

    def map_tags(self, tags: Iterable[str]) -> tuple[list[str], list[str]]:
        """Canonical genres for one title (taxonomy order, no repeats) and its unknown tags."""
        found: set[str] = set()
        unknown: list[str] = []
        for tag in tags:
            tag = tag.strip()
            if not tag:
                continue
            if tag not in self.mapping:
                unknown.append(tag)
            elif (genre := self.mapping[tag]) is not None:
                found.add(genre)
        return [g for g in self.genres if g in found], unknown

    def supported_genres(self, label_lists: Iterable[Sequence[str]]) -> list[str]:
        """Genres with at least `min_support` titles, in taxonomy order."""
        counts = dict.fromkeys(self.genres, 0)
        for labels in label_lists:
            for genre in labels:
                counts[genre] += 1
        return [g for g in self.genres if counts[g] >= self.min_support]
