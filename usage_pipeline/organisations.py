"""The organisations whose usage the ledger keeps: a YAML file named by USAGE_ORGANISATIONS, or one built from
OPENROUTER_API_KEY.

OpenRouter ties a management key to one organisation (its analytics, /activity and /generation answer for it
alone, and its rate limits are per account), so each organisation names the variable holding its own key,
and its points go to its own InfluxDB database. The file holds no secret: only variable names.

    organisations:
      - name: acme                           # the `org` partition and column; a-z, 0-9, _ and -
        key_variable: ACME_OPENROUTER_KEY    # the variable holding acme's management key
        influxdb_database: openrouter_acme   # optional; default <INFLUXDB_DATABASE>_<name>
        base_url: https://openrouter.ai/api/v1   # optional; default OPENROUTER_BASE_URL
        budgets: {daily_usd: 50, api_keys: {prod-key: 20}, users: {user-42: 5}}   # optional (budgets.py)

Without the file there is one organisation, `default`, whose key is OPENROUTER_API_KEY and whose database is
INFLUXDB_DATABASE itself: a deployment from before organisations keeps its points and its checks.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from usage_pipeline.budgets import Budgets, parse_budgets
from usage_pipeline.settings import SettingError, secret_setting, setting

VARIABLE = "USAGE_ORGANISATIONS"
DEFAULT_NAME = "default"
DEFAULT_KEY_VARIABLE = "OPENROUTER_API_KEY"
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_KEY_VARIABLE = re.compile(r"[A-Z_][A-Z0-9_]{0,127}")
_DATABASE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_FIELDS = {"name", "key_variable", "influxdb_database", "base_url", "budgets"}


@dataclass(frozen=True)
class Organisation:
    """One OpenRouter organisation: its name, the variable holding its management key, where its points go."""

    name: str
    key_variable: str = DEFAULT_KEY_VARIABLE
    influxdb_database: str | None = None  # None: INFLUXDB_DATABASE for `default` (no file), else <base>_<name>
    base_url: str | None = None  # None: OPENROUTER_BASE_URL
    implicit: bool = False  # built from OPENROUTER_API_KEY because no file is named
    budgets: Budgets = Budgets()  # daily spend budgets, none unless the file gives them

    def database(self, base: str) -> str:
        """The InfluxDB database (bucket) of this organisation, given INFLUXDB_DATABASE's value `base`."""
        if self.influxdb_database:
            return self.influxdb_database
        return base if self.implicit else f"{base}_{self.name}"

    def api_key(self, environ: Mapping[str, str] | None = None) -> str:
        """The organisation's management key, read from its own variable when a run starts (never logged)."""
        return str(secret_setting(self.key_variable, "an OpenRouter management key without spaces", environ))


@dataclass(frozen=True)
class Organisations:
    """The configured organisations, in file order; names, key variables and explicit databases unique."""

    members: tuple[Organisation, ...]
    source: str  # the file, or OPENROUTER_API_KEY

    @property
    def names(self) -> list[str]:
        return [org.name for org in self.members]

    def get(self, name: str) -> Organisation:
        for org in self.members:
            if org.name == name:
                return org
        raise SettingError(f"organisation {name!r} is not configured ({self.source} lists {', '.join(self.names)})")

    def pick(self, name: str | None) -> Organisation:
        """The organisation a command names (`--org`), or the only one when it names none."""
        if name is not None:
            return self.get(name)
        if len(self.members) > 1:
            raise SettingError(f"{self.source} lists {len(self.members)} organisations ({', '.join(self.names)}): "
                               "name one with --org")
        return self.members[0]

    def databases(self, base: str) -> dict[str, str]:
        """Each organisation's database; two sharing one would mix their generations, so that is refused."""
        found: dict[str, str] = {}
        for org in self.members:
            database = org.database(base)
            if database in found.values():
                other = next(name for name, db in found.items() if db == database)
                raise SettingError(f"{self.source}: organisations {other!r} and {org.name!r} would share InfluxDB "
                                   f"database {database!r}; give one an influxdb_database of its own")
            found[org.name] = database
        return found


def journal_path_for(base: Path, org: Organisation) -> Path:
    """The organisation's Broadcast journal: BROADCAST_JOURNAL_PATH itself for `default` (no file), else
    beside it, `broadcast.<org>.sqlite3`."""
    return base if org.implicit else base.with_name(f"{base.stem}.{org.name}{base.suffix}")


def implicit_organisations() -> Organisations:
    return Organisations((Organisation(DEFAULT_NAME, implicit=True),), DEFAULT_KEY_VARIABLE)


def load_organisations(environ: Mapping[str, str] | None = None) -> Organisations:
    """The organisations of the file USAGE_ORGANISATIONS names, or `default` when it names none; a bad file
    raises a one-line SettingError naming the file and what is wrong."""
    path = setting(VARIABLE, environ)
    if path is None:
        return implicit_organisations()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingError(f"{VARIABLE}={path!r} cannot be read: {exc.strerror or exc}") from None
    return parse_organisations(text, source=f"{VARIABLE} file {path}")


def parse_organisations(text: str, source: str = VARIABLE) -> Organisations:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise SettingError(f"{source} is not YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(document, dict) or set(document) != {"organisations"}:
        raise SettingError(f"{source} must be a mapping with one key, organisations: a list of "
                           "{name, key_variable} entries")
    entries = document["organisations"]
    if not isinstance(entries, list) or not entries:
        raise SettingError(f"{source}: organisations must be a non-empty list")
    members = tuple(_organisation(entry, f"{source}: organisations[{index}]") for index, entry in enumerate(entries))
    for field in ("name", "key_variable", "influxdb_database"):
        values = [getattr(org, field) for org in members if getattr(org, field) is not None]
        repeated = sorted({value for value in values if values.count(value) > 1})
        if repeated:
            raise SettingError(f"{source}: {field} {repeated[0]!r} is given to more than one organisation "
                               "(each organisation has its own)")
    return Organisations(members, source)


def _organisation(entry: Any, where: str) -> Organisation:
    if not isinstance(entry, dict):
        raise SettingError(f"{where} must be a mapping with name and key_variable, got {type(entry).__name__}")
    unknown = sorted(set(map(str, entry)) - _FIELDS)
    if unknown:
        raise SettingError(f"{where} has unknown field {unknown[0]!r} (fields: {', '.join(sorted(_FIELDS))})")
    for required in ("name", "key_variable"):
        if required not in entry:
            raise SettingError(f"{where} lacks {required}")
    name = _text(entry, "name", _NAME, where, "lower-case letters, digits, _ and -, at most 63, starting with a "
                                              "letter or digit")
    key_variable = _text(entry, "key_variable", _KEY_VARIABLE, where,  # not echoed: it may be a key pasted in
                         "an environment variable name (A-Z, 0-9, _), the variable holding the key, not the key",
                         echo=False)
    database = (_text(entry, "influxdb_database", _DATABASE, where, "a database (bucket) name")
                if entry.get("influxdb_database") is not None else None)
    base_url = None
    if entry.get("base_url") is not None:
        raw = entry["base_url"]
        try:
            base_url = setting("OPENROUTER_BASE_URL", {"OPENROUTER_BASE_URL": raw if isinstance(raw, str) else ""})
        except SettingError:
            raise SettingError(f"{where} ({name}): base_url must be an http(s) URL, got {str(raw)[:80]!r}") from None
    budgets = parse_budgets(entry.get("budgets"), name, f"{where} ({name})")
    return Organisation(name, key_variable, database, base_url, budgets=budgets)


def _text(entry: Mapping[str, Any], field: str, form: re.Pattern[str], where: str, described: str,
          echo: bool = True) -> str:
    value = entry[field]
    if not isinstance(value, str) or not form.fullmatch(value):
        raise SettingError(f"{where}: {field} must be {described}" + (f", got {str(value)[:80]!r}" if echo else ""))
    return value
