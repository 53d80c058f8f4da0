"""One model identity that holds on the live API. `GET /generation` names a model by its dated permaslug (older
records by its slug), `/activity` by slug and permaslug, analytics by label; only `GET /models` holds all three.
So comparisons key on the permaslug where it is known, else on the exact name, never dropped; a slug the day's
activity splits over two permaslugs (a model updated that day) keys both sides when the ledger holds it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from usage_pipeline.openrouter.analytics_values import shown
from usage_pipeline.openrouter.errors import OpenRouterError
from usage_pipeline.openrouter.source import OpenRouterClient


class ModelNamesError(OpenRouterError):
    """A `GET /models` entry that cannot be read as received; the message names the entry and field."""


@dataclass(frozen=True)
class ModelName:
    """A model as `GET /models` names it: slug (`id`), permaslug (`canonical_slug`) and label (`name`)."""

    slug: str
    permaslug: str | None
    name: str | None


def parse_model_names(entries: list[Any]) -> list[ModelName]:
    """`GET /models` entries as received; an entry without a usable `id` or with a non-string name is refused."""
    names = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ModelNamesError(f"GET /models entry {index}: not a JSON object, got {shown(entry)}")
        slug = entry.get("id")
        if not isinstance(slug, str) or not slug:
            raise ModelNamesError(f"GET /models entry {index}: id must be a non-empty string, got {shown(slug)}")
        permaslug, label = entry.get("canonical_slug"), entry.get("name")
        for key, value in (("canonical_slug", permaslug), ("name", label)):
            if value is not None and not isinstance(value, str):
                raise ModelNamesError(f"GET /models model {slug!r}: {key} must be a string or null, got {shown(value)}")
        names.append(ModelName(slug, permaslug, label))
    return names


@dataclass(frozen=True)
class ModelIdentity:
    """How a name is compared (`key`: the permaslug where known, else the name) and shown to people."""

    key: str
    slug: str | None
    label: str | None
    known: bool

    def shown(self) -> str:
        """`slug (permaslug)`, or the one name when they are the same or only one is known."""
        if self.slug and self.slug != self.key:
            return f"{self.slug} ({self.key})"
        return self.key


class ModelCatalogue:
    """The names of `GET /models` and of a day's `/activity` rows, and the identity each name resolves to."""

    def __init__(self, models: Iterable[ModelName] = (), activity: Iterable[tuple[str, str | None]] = ()) -> None:
        self._slug_of: dict[str, str] = {}  # permaslug -> slug
        self._label_of: dict[str, str] = {}  # permaslug or slug -> label
        self._permaslugs_of: dict[str, set[str]] = {}  # slug -> permaslugs
        self._day_permaslugs_of: dict[str, set[str]] = {}  # slug -> the permaslugs the day's activity shows
        for model in models:
            if model.permaslug:
                self._add(model.slug, model.permaslug)
            for name in (model.slug, model.permaslug):
                if name and model.name:
                    self._label_of.setdefault(name, model.name)
        for slug, permaslug in activity:
            if permaslug:
                self._add(slug, permaslug)
                self._day_permaslugs_of.setdefault(slug, set()).add(permaslug)
        self._split_slugs: set[str] = set()  # slugs the ledger holds as such while the day splits them

    def _add(self, slug: str, permaslug: str) -> None:
        self._slug_of.setdefault(permaslug, slug)
        self._permaslugs_of.setdefault(slug, set()).add(permaslug)

    def _permaslug_of_slug(self, slug: str) -> str | None:
        """The one permaslug a slug stands for: the day's own if it shows one, else the only one known."""
        for candidates in (self._day_permaslugs_of.get(slug), self._permaslugs_of.get(slug)):
            if candidates:
                return next(iter(candidates)) if len(candidates) == 1 else None
        return None

    def hold(self, stored_names: Iterable[str]) -> None:
        """Say which names the ledger holds, so a slug the day splits over permaslugs keys both sides."""
        for name in stored_names:
            if name not in self._slug_of and len(self._day_permaslugs_of.get(name, ())) > 1:
                self._split_slugs.add(name)

    def resolve(self, name: str) -> ModelIdentity:
        """The identity of a name as `/generation` or `/activity` gave it (a permaslug or a slug)."""
        if name in self._slug_of:  # a permaslug
            slug = self._slug_of[name]
            key = slug if slug in self._split_slugs else name
            return ModelIdentity(key, slug, self._label_of.get(name) or self._label_of.get(slug), True)
        if name in self._permaslugs_of:  # a slug
            permaslug = self._permaslug_of_slug(name)
            key = permaslug if permaslug is not None and name not in self._split_slugs else name
            return ModelIdentity(key, name, self._label_of.get(key) or self._label_of.get(name), True)
        return ModelIdentity(name, None, self._label_of.get(name), name in self._label_of)

    def activity_key(self, slug: str, permaslug: str | None) -> ModelIdentity:
        """The identity of an `/activity` row, which names its model both ways."""
        return self.resolve(permaslug) if permaslug else self.resolve(slug)


def read_model_names(client: OpenRouterClient) -> list[ModelName]:
    return parse_model_names(client.models())
