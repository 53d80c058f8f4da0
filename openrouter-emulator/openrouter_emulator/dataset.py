"""Deterministic synthetic OpenRouter usage of one organisation, built lazily per UTC day.

A day is generated from (seed, date) alone, never from "now", so every process with the same seed sees
the same generations. Columns are numpy arrays so a million generations a day stay compact and the
analytics queries stay vectorised. What is visible depends on time: today's traffic appears as its
timestamps pass, late arrivals appear when they are released.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
import uuid
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

UTC = dt.UTC
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
US_PER_SECOND = 1_000_000
US_PER_DAY = 86_400 * US_PER_SECOND
_ALPHABET = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", dtype=np.uint8)
_UUID_NAMESPACE = uuid.UUID("6f1c3f3e-5a57-4c1e-9a51-0e3f5d2a7b10")


def stable_uuid(name: str) -> str:
    """A UUID that depends only on `name`, so endpoint and workspace ids never change between runs."""
    return str(uuid.uuid5(_UUID_NAMESPACE, name))


# --- The organisation's world: models, endpoints, keys, people, apps ---------------------------------


@dataclass(frozen=True, slots=True)
class Model:
    slug: str  # what GET /generation and /activity answer as `model`
    permaslug: str  # the underlying id analytics filters take (and /activity's `model_permaslug`)
    name: str  # the human-readable label analytics answers (OpenRouter's model name)
    prompt_usd_per_mtok: float
    completion_usd_per_mtok: float
    providers: tuple[tuple[str, float], ...]  # (provider name, share of the model's traffic)
    share: float  # share of all traffic
    prompt_median: int
    completion_median: int
    reasoning: bool
    caching: bool
    ttft_ms: float
    tokens_per_second: float

    @property
    def family(self) -> str:
        return self.slug.split("/", 1)[0]


MODELS: tuple[Model, ...] = (
    Model("openai/gpt-4.1", "openai/gpt-4.1-2025-04-14", "OpenAI: GPT-4.1",
          2.0, 8.0, (("OpenAI", 0.8), ("Azure", 0.2)),
          0.1, 1800, 350, False, True, 550, 80),
    Model("openai/gpt-4.1-mini", "openai/gpt-4.1-mini-2025-04-14", "OpenAI: GPT-4.1 Mini",
          0.4, 1.6, (("OpenAI", 1.0),),
          0.18, 1500, 300, False, True, 400, 110),
    Model("openai/o4-mini", "openai/o4-mini-2025-04-16", "OpenAI: o4 Mini",
          1.1, 4.4, (("OpenAI", 1.0),),
          0.04, 1200, 400, True, True, 2500, 120),
    Model("anthropic/claude-sonnet-4", "anthropic/claude-4-sonnet-20250522", "Anthropic: Claude Sonnet 4",
          3.0, 15.0, (("Anthropic", 0.6), ("Amazon Bedrock", 0.25), ("Google", 0.15)),
          0.15, 3500, 500, False, True, 1400, 60),
    Model("anthropic/claude-3.5-haiku", "anthropic/claude-3-5-haiku-20241022", "Anthropic: Claude 3.5 Haiku",
          0.8, 4.0, (("Anthropic", 0.7), ("Amazon Bedrock", 0.3)),
          0.06, 1600, 250, False, True, 700, 90),
    Model("google/gemini-2.5-flash", "google/gemini-2.5-flash", "Google: Gemini 2.5 Flash",
          0.3, 2.5, (("Google AI Studio", 0.7), ("Google", 0.3)),
          0.17, 2200, 400, False, True, 500, 160),
    Model("google/gemini-2.5-pro", "google/gemini-2.5-pro", "Google: Gemini 2.5 Pro",
          1.25, 10.0, (("Google AI Studio", 0.6), ("Google", 0.4)),
          0.05, 3000, 600, True, True, 3000, 85),
    Model("meta-llama/llama-3.3-70b-instruct", "meta-llama/llama-3.3-70b-instruct", "Meta: Llama 3.3 70B Instruct",
          0.13, 0.39, (("Together", 0.35), ("DeepInfra", 0.3), ("Groq", 0.2), ("Fireworks", 0.15)),
          0.08, 900, 250, False, False, 350, 140),
    Model("mistralai/mistral-small-3.2-24b-instruct", "mistralai/mistral-small-3.2-24b-instruct-2506",
          "Mistral: Mistral Small 3.2 24B",
          0.1, 0.3, (("Mistral", 0.6), ("DeepInfra", 0.4)),
          0.04, 700, 200, False, False, 300, 150),
    Model("deepseek/deepseek-chat-v3-0324", "deepseek/deepseek-chat-v3-0324", "DeepSeek: DeepSeek V3 0324",
          0.27, 1.1, (("DeepSeek", 0.5), ("DeepInfra", 0.3), ("Novita", 0.2)),
          0.07, 1400, 350, False, True, 900, 45),
    Model("deepseek/deepseek-r1-0528", "deepseek/deepseek-r1-0528", "DeepSeek: R1 0528",
          0.5, 2.15, (("DeepSeek", 0.4), ("Together", 0.3), ("Fireworks", 0.3)),
          0.03, 1000, 500, True, False, 2000, 50),
    Model("qwen/qwen3-235b-a22b-2507", "qwen/qwen3-235b-a22b-07-25", "Qwen: Qwen3 235B A22B Instruct 2507",
          0.13, 0.6, (("Together", 0.4), ("Fireworks", 0.3), ("Alibaba", 0.3)),
          0.02, 1100, 300, False, False, 600, 70),
    Model("x-ai/grok-3-mini", "x-ai/grok-3-mini", "xAI: Grok 3 Mini",
          0.3, 0.5, (("xAI", 1.0),),
          0.01, 800, 200, True, True, 1200, 100),
)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One (model, provider) pair: the unit `/activity` reports on."""

    model: int
    provider: str
    endpoint_id: str


ENDPOINTS: tuple[Endpoint, ...] = tuple(
    Endpoint(m, provider, stable_uuid(f"{model.permaslug}@{provider}"))
    for m, model in enumerate(MODELS)
    for provider, _ in model.providers
)
PROVIDERS: tuple[str, ...] = tuple(sorted({e.provider for e in ENDPOINTS}))
ENDPOINT_PROVIDER = np.array([PROVIDERS.index(e.provider) for e in ENDPOINTS], dtype=np.int16)


@dataclass(frozen=True, slots=True)
class Member:
    clerk_id: str
    name: str


@dataclass(frozen=True, slots=True)
class Workspace:
    workspace_id: str
    name: str


@dataclass(frozen=True, slots=True)
class App:
    app_id: int
    title: str
    origin: str


@dataclass(frozen=True, slots=True)
class ApiKey:
    numeric_id: int
    label: str
    member: int
    workspace: int
    share: float
    user_agent: str
    app: int  # -1: requests carry no app attribution
    app_share: float
    external_user_share: float
    streamed_share: float

    @property
    def hash(self) -> str:
        return hashlib.sha256(f"emulator-key:{self.label}".encode()).hexdigest()


MEMBERS: tuple[Member, ...] = (
    Member("user_2dHFtVWx2n56w6HkM7c0a1bQe4Z", "Alice Chen"),
    Member("user_2eKqP9sLm3Vn8xWc4RtY6uJh1Ab", "Bilal Osman"),
    Member("user_2fRtY7uIo9PaS1dF3gH5jK8lZxC", "Carmen Diaz"),
    Member("user_2gVbN4mQw6EeR8tY0uI2oP5aSdF", "Dmitri Volkov"),
)
WORKSPACES: tuple[Workspace, ...] = (
    Workspace(stable_uuid("workspace:default"), "Default Workspace"),
    Workspace(stable_uuid("workspace:platform"), "Platform"),
    Workspace(stable_uuid("workspace:research"), "Research"),
)
APPS: tuple[App, ...] = (
    App(184023, "Acme Copilot", "https://copilot.acme.example/"),
    App(2291817, "Acme Support Bot", "https://support.acme.example/"),
    App(3050112, "Evals Dashboard", "https://evals.acme.example/"),
)
API_KEYS: tuple[ApiKey, ...] = (
    ApiKey(1001, "prod-backend", 0, 0, 0.45, "OpenAI/Python 1.82.0", 0, 0.7, 0.85, 0.8),
    ApiKey(1002, "prod-batch", 0, 0, 0.25, "python-httpx/0.28.1", -1, 0.0, 0.0, 0.0),
    ApiKey(1003, "staging", 1, 1, 0.10, "OpenAI/NodeJS 4.98.0", 1, 0.5, 0.85, 0.9),
    ApiKey(1004, "data-science", 2, 2, 0.15, "python-requests/2.32.3", -1, 0.0, 0.1, 0.5),
    ApiKey(1005, "ci-evals", 3, 2, 0.05, "OpenRouter-Evals/0.3.1", 2, 1.0, 0.0, 0.0),
)
EXTERNAL_USERS: tuple[str, ...] = tuple(
    f"cust_{hashlib.sha1(f'external-user-{i}'.encode()).hexdigest()[:10]}" for i in range(40)
)
FINISH_REASONS: tuple[str, ...] = ("stop", "tool_calls", "length", "content_filter", "error", "cancelled")

# Bits of the `flags` column.
BYOK, CANCELLED, STREAMED, FALLBACK, ROUTED, WEB_SEARCH, LATE = 1, 2, 4, 8, 16, 32, 64

# Share of traffic per UTC hour: quiet nights, a strong business-hours peak (Europe + US overlap).
_HOURLY = np.array([0.15, 0.12, 0.10, 0.10, 0.12, 0.20, 0.35, 0.60, 0.90, 1.00, 1.00, 0.95,
                    0.90, 1.00, 1.00, 0.95, 0.85, 0.70, 0.55, 0.45, 0.35, 0.30, 0.25, 0.20])


# --- Columns -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DayColumns:
    """One row per generation, sorted by `created_us`; nullable floats use NaN, nullable codes -1."""

    created_us: np.ndarray  # int64 microseconds since the epoch
    visible_at: np.ndarray  # float64 unix seconds from which the API shows the generation
    endpoint: np.ndarray  # int16 index into ENDPOINTS
    model: np.ndarray  # int8 index into MODELS
    api_key: np.ndarray  # int8 index into API_KEYS
    external_user: np.ndarray  # int16 index into EXTERNAL_USERS or -1
    app: np.ndarray  # int8 index into APPS or -1
    finish: np.ndarray  # int8 index into FINISH_REASONS or -1
    flags: np.ndarray  # uint8 bit set
    tokens_prompt: np.ndarray  # int32
    tokens_completion: np.ndarray  # int32 (includes reasoning)
    tokens_reasoning: np.ndarray  # int32
    tokens_cached: np.ndarray  # int32
    usage: np.ndarray  # float64 USD charged by OpenRouter (== total_cost)
    upstream_cost: np.ndarray  # float64 USD charged upstream (BYOK only, else NaN)
    latency_ms: np.ndarray  # float32
    generation_ms: np.ndarray  # float32
    moderation_ms: np.ndarray  # float32 or NaN
    id_suffix: np.ndarray  # S20
    request_suffix: np.ndarray  # S20

    def __len__(self) -> int:
        return len(self.created_us)

    def take(self, index: np.ndarray) -> DayColumns:
        return DayColumns(*(getattr(self, f.name)[index] for f in fields(self)))

    def concat(self, other: DayColumns) -> DayColumns:
        """Both sets of rows, re-sorted by time (stable, so earlier rows keep their order)."""
        merged = DayColumns(*(np.concatenate([getattr(self, f.name), getattr(other, f.name)]) for f in fields(self)))
        return merged.take(np.argsort(merged.created_us, kind="stable"))


def _random_suffixes(rng: np.random.Generator, n: int) -> np.ndarray:
    return _ALPHABET[rng.integers(0, len(_ALPHABET), size=(n, 20))].view("S20").ravel()


def _timestamps(rng: np.random.Generator, n: int, start_us: int, span_us: int, bursty: bool) -> np.ndarray:
    """Sorted microsecond timestamps in [start_us, start_us + span_us) with a diurnal profile."""
    minutes = max(1, -(-span_us // (60 * US_PER_SECOND)))
    weights = _HOURLY[(np.arange(minutes) // 60) % 24] * rng.lognormal(0.0, 0.35, minutes)
    if bursty:
        bursts = rng.choice(minutes, size=min(minutes, 25), replace=False)
        weights[bursts] *= rng.uniform(4.0, 12.0, len(bursts))
    counts = rng.multinomial(n, weights / weights.sum())
    minute_of = np.repeat(np.arange(minutes, dtype=np.int64), counts)
    offsets = minute_of * 60 * US_PER_SECOND + rng.integers(0, 60 * US_PER_SECOND, n)
    offsets = np.minimum(offsets, span_us - 1)
    return np.sort(start_us + offsets)


def _pick(rng: np.random.Generator, shares: list[float], n: int) -> np.ndarray:
    p = np.asarray(shares, dtype=np.float64)
    return rng.choice(len(p), size=n, p=p / p.sum())


def generate_columns(rng: np.random.Generator, n: int, start_us: int, span_us: int, *,
                     bursty: bool, twins: bool, visible_at: float | None) -> DayColumns:
    """`n` generations inside a window; `twins` gives ~1% of them another's exact timestamp and endpoint.

    `visible_at` None means each generation is visible from its own timestamp (live traffic).
    """
    created = _timestamps(rng, n, start_us, span_us, bursty)
    model = _pick(rng, [m.share for m in MODELS], n).astype(np.int8)
    endpoint = np.zeros(n, dtype=np.int16)
    first = 0
    for m, spec in enumerate(MODELS):
        rows = np.flatnonzero(model == m)
        endpoint[rows] = first + _pick(rng, [s for _, s in spec.providers], len(rows))
        first += len(spec.providers)
    twin_rows = np.zeros(0, dtype=np.int64)
    if twins and n >= 2:
        wanted = max(1, round(n * 0.01))
        candidates = np.sort(rng.choice(np.arange(1, n), size=min(wanted, n - 1), replace=False))
        chosen = np.zeros(n, dtype=bool)
        chosen[candidates] = True
        twin_rows = candidates[~chosen[candidates - 1]]  # never chain: a twin copies an original
        created[twin_rows] = created[twin_rows - 1]
        model[twin_rows] = model[twin_rows - 1]
        endpoint[twin_rows] = endpoint[twin_rows - 1]

    api_key = _pick(rng, [k.share for k in API_KEYS], n).astype(np.int8)
    key_app = np.array([k.app for k in API_KEYS], dtype=np.int8)[api_key]
    app_share = np.array([k.app_share for k in API_KEYS])[api_key]
    app = np.where(rng.random(n) < app_share, key_app, -1).astype(np.int8)
    user_weights = 1.0 / np.arange(1, len(EXTERNAL_USERS) + 1) ** 0.8
    user = _pick(rng, list(user_weights), n).astype(np.int16)
    user_share = np.array([k.external_user_share for k in API_KEYS])[api_key]
    external_user = np.where(rng.random(n) < user_share, user, -1).astype(np.int16)

    prompt_median = np.array([m.prompt_median for m in MODELS], dtype=np.float64)[model]
    completion_median = np.array([m.completion_median for m in MODELS], dtype=np.float64)[model]
    reasoning_model = np.array([m.reasoning for m in MODELS])[model]
    caching_model = np.array([m.caching for m in MODELS])[model]
    prompt = np.clip(rng.lognormal(np.log(prompt_median), 1.0), 5, 200_000).astype(np.int32)
    visible_completion = np.clip(rng.lognormal(np.log(completion_median), 0.9), 1, 32_000)
    reasoning = np.where(reasoning_model, np.clip(rng.lognormal(np.log(700.0), 0.8), 16, 30_000), 0.0)
    cached = np.where(caching_model & (rng.random(n) < 0.4), prompt * rng.uniform(0.3, 0.95, n), 0.0).astype(np.int32)

    roll = rng.random(n)
    cancelled = roll < 0.02
    finish = _pick(rng, [0.82, 0.12, 0.04, 0.005, 0.015], n).astype(np.int8)
    finish = np.where(cancelled, np.where(rng.random(n) < 0.4, FINISH_REASONS.index("cancelled"), -1), finish)
    finish = finish.astype(np.int8)
    errored = finish == FINISH_REASONS.index("error")
    cut = np.where(cancelled, rng.uniform(0.0, 0.5, n), 1.0)
    cut = np.where(errored, 0.0, cut)
    visible_completion = np.floor(visible_completion * cut)
    reasoning = np.floor(reasoning * cut)
    completion = (visible_completion + reasoning).astype(np.int32)
    reasoning = reasoning.astype(np.int32)

    pin = np.array([m.prompt_usd_per_mtok for m in MODELS])[model] / 1e6
    pout = np.array([m.completion_usd_per_mtok for m in MODELS])[model] / 1e6
    provider_cost = np.round((prompt - cached) * pin + cached * pin * 0.25 + completion * pout, 9)
    byok = rng.random(n) < 0.03
    usage = np.where(byok, np.round(provider_cost * 0.05, 9), provider_cost)
    upstream_cost = np.where(byok, provider_cost, np.nan)

    ttft = np.array([m.ttft_ms for m in MODELS])[model]
    tps = np.array([m.tokens_per_second for m in MODELS])[model]
    latency = np.round(rng.lognormal(np.log(ttft), 0.5)).astype(np.float32)
    generation = np.round(latency + completion / tps * 1000.0 * rng.lognormal(0.0, 0.2, n)).astype(np.float32)
    openai_served = np.isin(endpoint, [i for i, e in enumerate(ENDPOINTS) if e.provider == "OpenAI"])
    moderation = np.where(openai_served & (rng.random(n) < 0.4), np.round(rng.lognormal(np.log(45.0), 0.3, n)), np.nan)

    streamed_share = np.array([k.streamed_share for k in API_KEYS])[api_key]
    flags = (byok * BYOK | cancelled * CANCELLED | (rng.random(n) < streamed_share) * STREAMED
             | (rng.random(n) < 0.03) * FALLBACK | (rng.random(n) < 0.02) * ROUTED
             | (rng.random(n) < 0.01) * WEB_SEARCH).astype(np.uint8)

    id_suffix = _random_suffixes(rng, n)
    request_suffix = _random_suffixes(rng, n)
    request_suffix[twin_rows] = request_suffix[twin_rows - 1]  # twins are two choices of one request
    shown = created / US_PER_SECOND if visible_at is None else np.full(n, visible_at)
    return DayColumns(created, shown.astype(np.float64), endpoint, model, api_key, external_user, app, finish, flags,
                      prompt, completion, reasoning, cached, usage, upstream_cost, latency, generation,
                      moderation.astype(np.float32), id_suffix, request_suffix)


# --- Days and the dataset ----------------------------------------------------------------------------


def day_start_us(date: dt.date) -> int:
    return (date - dt.date(1970, 1, 1)).days * US_PER_DAY


def utc_today(now: float) -> dt.date:
    return dt.datetime.fromtimestamp(now, UTC).date()


@dataclass(frozen=True, slots=True)
class UsageDay:
    """An immutable snapshot of one UTC day; adding late generations replaces the snapshot."""

    date: dt.date
    columns: DayColumns

    def visible(self, now: float) -> np.ndarray:
        return self.columns.visible_at <= now

    def generation_id(self, row: int) -> str:
        seconds = int(self.columns.created_us[row]) // US_PER_SECOND
        return f"gen-{seconds}-{self.columns.id_suffix[row].decode()}"

    def generation_ids(self, rows: np.ndarray) -> list[str]:
        seconds = (self.columns.created_us[rows] // US_PER_SECOND).tolist()
        return [f"gen-{s}-{x.decode()}" for s, x in zip(seconds, self.columns.id_suffix[rows].tolist(), strict=False)]

    def locate(self, seconds: int, suffix: bytes) -> int | None:
        """The row of `gen-<seconds>-<suffix>`: a binary search on time, then a scan of that second."""
        created = self.columns.created_us
        lo = int(np.searchsorted(created, seconds * US_PER_SECOND, side="left"))
        hi = int(np.searchsorted(created, (seconds + 1) * US_PER_SECOND, side="left"))
        hits = np.flatnonzero(self.columns.id_suffix[lo:hi] == suffix)
        return lo + int(hits[0]) if len(hits) else None


def parse_generation_id(gen_id: str) -> tuple[int, bytes] | None:
    parts = gen_id.split("-")
    if len(parts) != 3 or parts[0] != "gen" or not parts[1].isdigit() or len(parts[2]) != 20:
        return None
    try:
        return int(parts[1]), parts[2].encode("ascii")
    except UnicodeEncodeError:
        return None


class UsageDataset:
    """The organisation's generations for `days` completed UTC days plus today, built on first use."""

    def __init__(self, *, seed: int, generations_per_day: int, days: int, late_generations: int = 0,
                 late_visible_at: float = 0.0) -> None:
        self.seed = seed
        self.generations_per_day = generations_per_day
        self.days = days
        self.late_generations = late_generations
        self.late_visible_at = late_visible_at
        self._days: dict[dt.date, UsageDay] = {}
        self._batches: dict[dt.date, int] = {}
        self._lock = threading.Lock()

    def dates(self, now: float) -> list[dt.date]:
        today = utc_today(now)
        return [today - dt.timedelta(days=k) for k in range(self.days, -1, -1)]

    def covers(self, date: dt.date, now: float) -> bool:
        today = utc_today(now)
        return today - dt.timedelta(days=self.days) <= date <= today

    def built_day(self, date: dt.date) -> UsageDay | None:
        """The day's snapshot if something already needed it; never builds (cheap endpoints use it)."""
        return self._days.get(date)

    def day(self, date: dt.date, now: float) -> UsageDay | None:
        """The day's snapshot, or None when the organisation has no traffic that day."""
        if not self.covers(date, now):
            return None
        built = self._days.get(date)
        if built is not None:
            return built
        with self._lock:
            if date not in self._days:
                self._days[date] = UsageDay(date, self._build(date, now))
            return self._days[date]

    def _build(self, date: dt.date, now: float) -> DayColumns:
        ordinal = date.toordinal()
        start = day_start_us(date)
        rng = np.random.default_rng([self.seed, ordinal])
        columns = generate_columns(rng, self.generations_per_day, start, US_PER_DAY, bursty=True, twins=True,
                                   visible_at=None)
        if self.late_generations > 0 and date < utc_today(now):
            late_rng = np.random.default_rng([self.seed, ordinal, 1])
            late = generate_columns(late_rng, self.late_generations, start, US_PER_DAY, bursty=False, twins=False,
                                    visible_at=self.late_visible_at)
            late.flags[:] |= LATE
            late.visible_at[:] = np.maximum(late.visible_at, late.created_us / US_PER_SECOND)
            columns = columns.concat(late)
        return columns

    def add_generations(self, date: dt.date, count: int, now: float, at_us: int | None = None) -> list[str]:
        """Late arrivals for `date`, visible from `now`; ids depend on (seed, date, batch number) only.

        `at_us` puts all of them at one instant (a burst), to test what no window can split.
        """
        day = self.day(date, now)
        if day is None:
            raise ValueError(f"{date} is outside the emulated days")
        start = day_start_us(date)
        span = min(US_PER_DAY, int(now * US_PER_SECOND) - start)
        if span <= 0 or count <= 0:
            raise ValueError("count must be positive and the date must have begun")
        with self._lock:
            batch = self._batches.get(date, 0) + 1
            self._batches[date] = batch
            rng = np.random.default_rng([self.seed, date.toordinal(), 2, batch])
            added = generate_columns(rng, count, start, span, bursty=False, twins=False, visible_at=now)
            if at_us is not None:
                if not start <= at_us < start + span:
                    raise ValueError(f"'at' must lie inside {date} and before now")
                added.created_us[:] = at_us
            added.flags[:] |= LATE
            current = self._days[date]
            self._days[date] = UsageDay(date, current.columns.concat(added))
        return sorted(UsageDay(date, added).generation_ids(np.arange(count)))

    def find(self, gen_id: str, now: float) -> tuple[UsageDay, int] | None:
        """The generation's day and row, whether or not it is visible yet."""
        parsed = parse_generation_id(gen_id)
        if parsed is None:
            return None
        seconds, suffix = parsed
        day = self.day(dt.datetime.fromtimestamp(seconds, UTC).date(), now)
        if day is None:
            return None
        row = day.locate(seconds, suffix)
        return None if row is None else (day, row)

    def truth(self, date: dt.date, now: float) -> dict[str, Any]:
        """The ground truth of one UTC day as the API would show it now (models by slug, keys by label).

        `models` and `api_keys` name every model and key each way the API does, a bridge the real API
        does not offer in one place (tests use it to check label-named analytics against the truth).
        """
        catalogue = {
            "models": [{"slug": m.slug, "permaslug": m.permaslug, "label": m.name} for m in MODELS],
            "api_keys": [{"numeric_id": k.numeric_id, "hash": k.hash, "label": k.label} for k in API_KEYS],
        }
        day = self.day(date, now)
        if day is None:
            return {"date": date.isoformat(), "count": 0, "ids": [], "by_model": {}, "cost": 0.0,
                    "by_model_cost": {}, "by_api_key": {}, **catalogue}
        rows = np.flatnonzero(day.visible(now))
        c = day.columns
        model = c.model[rows]
        counts = np.bincount(model, minlength=len(MODELS))
        costs = np.bincount(model, weights=c.usage[rows], minlength=len(MODELS))
        keys = np.bincount(c.api_key[rows], minlength=len(API_KEYS))
        return {
            "date": date.isoformat(),
            "count": int(len(rows)),
            "ids": sorted(day.generation_ids(rows)),
            "by_model": {MODELS[m].slug: int(counts[m]) for m in range(len(MODELS)) if counts[m]},
            "cost": float(c.usage[rows].sum()),
            "by_model_cost": {MODELS[m].slug: float(costs[m]) for m in range(len(MODELS)) if counts[m]},
            "by_api_key": {API_KEYS[k].label: int(keys[k]) for k in range(len(API_KEYS)) if keys[k]},
            **catalogue,
        }


# --- One record as `GET /generation` answers it ------------------------------------------------------


def format_created_at(created_us: int) -> str:
    """`2024-07-15T23:33:19.433273+00:00`, the API's own format."""
    return (EPOCH + dt.timedelta(microseconds=created_us)).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


_NATIVE_FINISH = {
    "anthropic": {"stop": "end_turn", "tool_calls": "tool_use", "length": "max_tokens", "content_filter": "refusal"},
    "google": {"stop": "STOP", "tool_calls": "STOP", "length": "MAX_TOKENS", "content_filter": "SAFETY"},
}


def _nullable(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def _upstream_id(provider: str, suffix: str) -> str:
    if provider in ("Anthropic", "Amazon Bedrock") or (provider == "Google" and suffix[0] < "N"):
        return f"msg_01{suffix}"
    if provider in ("Google AI Studio", "Google"):
        return suffix[::-1]
    return f"chatcmpl-{stable_uuid(suffix)}"


def generation_record(day: UsageDay, row: int) -> dict[str, Any]:
    """All 45 fields of the spec's `GenerationResponse.data`, null where the spec and reality allow."""
    c = day.columns
    endpoint = ENDPOINTS[int(c.endpoint[row])]
    model = MODELS[endpoint.model]
    key = API_KEYS[int(c.api_key[row])]
    flags = int(c.flags[row])
    created_us = int(c.created_us[row])
    suffix = c.id_suffix[row].decode()
    seconds = created_us // US_PER_SECOND
    finish_code = int(c.finish[row])
    finish = FINISH_REASONS[finish_code] if finish_code >= 0 else None
    native_finish = None if finish in (None, "error", "cancelled") else _NATIVE_FINISH.get(model.family, {}).get(
        finish, finish)
    app_code = int(c.app[row])
    app = APPS[app_code] if app_code >= 0 else None
    user_code = int(c.external_user[row])
    cached = int(c.tokens_cached[row])
    byok = bool(flags & BYOK)
    upstream = _upstream_id(endpoint.provider, suffix)
    latency = float(c.latency_ms[row])
    attempts: list[dict[str, Any]] = []
    if flags & FALLBACK:
        siblings = [e for e in ENDPOINTS if e.model == endpoint.model and e is not endpoint] or [endpoint]
        failed = siblings[ord(suffix[0]) % len(siblings)]
        attempts.append({"endpoint_id": failed.endpoint_id, "id": f"err-{suffix[:12]}", "is_byok": byok,
                         "latency": float(40 + ord(suffix[1]) % 200), "model_permaslug": model.permaslug,
                         "provider_name": failed.provider, "status": 429 if ord(suffix[2]) % 2 else 502})
    attempts.append({"endpoint_id": endpoint.endpoint_id, "id": upstream, "is_byok": byok, "latency": latency,
                     "model_permaslug": model.permaslug, "provider_name": endpoint.provider, "status": 200})
    web = bool(flags & WEB_SEARCH)
    pin = model.prompt_usd_per_mtok / 1e6
    return {
        "id": f"gen-{seconds}-{suffix}",
        "upstream_id": upstream,
        "total_cost": float(c.usage[row]),
        "cache_discount": round(cached * pin * 0.75, 9) if cached and not byok else None,
        "upstream_inference_cost": _nullable(c.upstream_cost[row]),
        "created_at": format_created_at(created_us),
        "model": model.slug,
        "app_id": app.app_id if app else None,
        "streamed": bool(flags & STREAMED),
        "cancelled": bool(flags & CANCELLED),
        "provider_name": endpoint.provider,
        "latency": latency,
        "moderation_latency": _nullable(c.moderation_ms[row]),
        "generation_time": float(c.generation_ms[row]),
        "finish_reason": finish,
        "service_tier": "default" if endpoint.provider == "OpenAI" else None,
        "tokens_prompt": int(c.tokens_prompt[row]),
        "tokens_completion": int(c.tokens_completion[row]),
        "native_tokens_prompt": int(c.tokens_prompt[row]),
        "native_tokens_completion": int(c.tokens_completion[row]),
        "native_tokens_completion_images": 0,
        "native_tokens_reasoning": int(c.tokens_reasoning[row]),
        "native_tokens_cached": cached,
        "num_media_prompt": 1 if model.family == "google" and ord(suffix[3]) % 10 == 0 else 0,
        "num_input_audio_prompt": 0,
        "num_media_completion": 0,
        "num_search_results": 5 if web else 0,
        "num_fetches": 0,
        "web_search_engine": "exa" if web else None,
        "origin": app.origin if app else "",
        "usage": float(c.usage[row]),
        "is_byok": byok,
        "native_finish_reason": native_finish,
        "external_user": EXTERNAL_USERS[user_code] if user_code >= 0 else None,
        "api_type": "completions",
        "preset_id": None,
        "router": "openrouter/auto" if flags & ROUTED else None,
        "provider_responses": attempts,
        "user_agent": key.user_agent,
        "http_referer": app.origin if app else None,
        "data_region": "global",
        "workspace_id": WORKSPACES[key.workspace].workspace_id,
        "request_id": f"req-{seconds}-{c.request_suffix[row].decode()}",
        "session_id": f"sess-{EXTERNAL_USERS[user_code][5:]}-{seconds // 3600}" if user_code >= 0 and user_code % 3 == 0
        else None,
        "response_cache_source_id": None,
    }
