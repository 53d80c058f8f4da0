"""The emulated organisation's world: its models and their provider endpoints, API keys, people and apps.

Fixed for every seed, so ids and labels never change between runs; the synthetic generations
(`columns`), the history cells, the analytics catalogue and the account endpoints all index into
these tuples, and the position in a tuple is the code a column stores.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

import numpy as np

_UUID_NAMESPACE = uuid.UUID("6f1c3f3e-5a57-4c1e-9a51-0e3f5d2a7b10")


def stable_uuid(name: str) -> str:
    """A UUID that depends only on `name`, so endpoint and workspace ids never change between runs."""
    return str(uuid.uuid5(_UUID_NAMESPACE, name))


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
ACCOUNT_OWNER = MEMBERS[0]  # created the keys; its id is `GET /key`'s creator_user_id and 429s' user_id
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
