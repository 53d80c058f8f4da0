"""The synthetic generations of a time window as numpy columns: who called which model, when, at what cost.

Columns rather than records keep a million generations a day compact and the analytics queries
vectorised; every draw comes from the caller's seeded generator, so the same seed and window give the
same rows.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from openrouter_emulator.isotime import US_PER_MS, US_PER_SECOND
from openrouter_emulator.organisation import API_KEYS, ENDPOINTS, EXTERNAL_USERS, FINISH_REASONS, MODELS

# Bits of the `flags` column.
BYOK, CANCELLED, STREAMED, FALLBACK, ROUTED, WEB_SEARCH, LATE = 1, 2, 4, 8, 16, 32, 64

# Share of traffic per UTC hour: quiet nights, a strong business-hours peak (Europe + US overlap).
_HOURLY = np.array([0.15, 0.12, 0.10, 0.10, 0.12, 0.20, 0.35, 0.60, 0.90, 1.00, 1.00, 0.95,
                    0.90, 1.00, 1.00, 0.95, 0.85, 0.70, 0.55, 0.45, 0.35, 0.30, 0.25, 0.20])
# The characters of a generation id's 20-character suffix.
_ALPHABET = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", dtype=np.uint8)


@dataclass(frozen=True, slots=True)
class DayColumns:
    """One row per generation, sorted by `created_us`; nullable floats use NaN, nullable codes -1."""

    created_us: np.ndarray  # int64 microseconds since the epoch, whole milliseconds
    visible_at: np.ndarray  # float64 unix seconds from which the API shows the generation
    endpoint: np.ndarray  # int16 index into ENDPOINTS
    model: np.ndarray  # int8 index into MODELS
    api_key: np.ndarray  # int8 index into API_KEYS
    external_user: np.ndarray  # int16 index into EXTERNAL_USERS or -1
    app: np.ndarray  # int8 index into APPS or -1
    finish: np.ndarray  # int8 index into FINISH_REASONS or -1 (always -1 for a cancelled stream)
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
    """Sorted whole-millisecond timestamps (in µs) in [start_us, start_us + span_us) with a diurnal profile;
    `start_us` is a whole millisecond."""
    minutes = max(1, -(-span_us // (60 * US_PER_SECOND)))
    weights = _HOURLY[(np.arange(minutes) // 60) % 24] * rng.lognormal(0.0, 0.35, minutes)
    if bursty:
        bursts = rng.choice(minutes, size=min(minutes, 25), replace=False)
        weights[bursts] *= rng.uniform(4.0, 12.0, len(bursts))
    counts = rng.multinomial(n, weights / weights.sum())
    minute_of = np.repeat(np.arange(minutes, dtype=np.int64), counts)
    offsets = minute_of * 60 * US_PER_SECOND + rng.integers(0, 60 * US_PER_SECOND, n)
    offsets = np.minimum(offsets, span_us - 1)
    return np.sort(whole_ms(start_us + offsets))


def whole_ms(created_us: np.ndarray) -> np.ndarray:
    """Times truncated to the millisecond: the live API writes `created_at` to the ms, so every instant the
    emulator keeps is one it can write exactly, and analytics windows, the truth and records agree."""
    return created_us - created_us % US_PER_MS


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
    # A stream the client cancelled never got a finish reason (as the live API answers it); a cancelled
    # non-streamed request may still say "cancelled".
    finish[cancelled & ((flags & STREAMED) > 0)] = -1

    id_suffix = _random_suffixes(rng, n)
    request_suffix = _random_suffixes(rng, n)
    request_suffix[twin_rows] = request_suffix[twin_rows - 1]  # twins are two choices of one request
    shown = created / US_PER_SECOND if visible_at is None else np.full(n, visible_at)
    return DayColumns(created, shown.astype(np.float64), endpoint, model, api_key, external_user, app, finish, flags,
                      prompt, completion, reasoning, cached, usage, upstream_cost, latency, generation,
                      moderation.astype(np.float32), id_suffix, request_suffix)
