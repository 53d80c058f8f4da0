"""One model identity that holds on the live API: every name OpenRouter uses for a model, mapped to the one
the checks compare on.

OpenRouter names a model three ways, and each endpoint picks its own:
- `GET /generation`'s `model` is the dated **permaslug** (`anthropic/claude-4.5-haiku-20251001`, the same
  string as `provider_responses[].model_permaslug`); older records and the spec's examples give the slug;
- `/activity` rows carry the **slug** (`anthropic/claude-opus-4`) in `model` beside `model_permaslug`;
- analytics answers the human-readable **label** (`Anthropic: Claude Opus 4`) and filters by permaslug;
- `GET /models` is the one place all three meet: `id` (slug), `canonical_slug` (permaslug), `name` (label).

So comparisons key on the permaslug, and the slug and label are shown beside it. A name neither source
knows is compared as its exact string and shown as it is, never dropped. A slug that the day's activity
splits over two permaslugs (a model updated that day) cannot be pinned to one: when the ledger holds that
slug itself, the slug is the key on both sides, so the counts still meet. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from usage_pipeline.openrouter.analytics_values import shown
from usage_pipeline.openrouter.client import OpenRouterClient
from usage_pipeline.openrouter.transport import OpenRouterError


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
        values = {}
        for name in ("canonical_slug", "name"):
            value = entry.get(name)
            if value is not None and not isinstance(value, str):
                raise ModelNamesError(f"GET /models model {slug!r}: {name} must be a string or null, "
                                      f"got {shown(value)}")
            values[name] = value
        names.append(ModelName(slug, values["canonical_slug"], values["name"]))
    return names


@dataclass(frozen=True)
class ModelIdentity:
    """How one name is compared and shown: `key` is what both sides are grouped by (the permaslug when it
    is known, else the exact name); `slug` and `label` are for people (None when no source knows them)."""

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
            if model.name:
                self._label_of.setdefault(model.slug, model.name)
            if model.permaslug:
                self._add(model.slug, model.permaslug)
                if model.name:
                    self._label_of.setdefault(model.permaslug, model.name)
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
    """Every model `GET /models` lists, as received."""
    return parse_model_names(client.models())
