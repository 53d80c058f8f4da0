"""The account endpoints: `/activity`, `/key` and `/credits`, computed from the synthetic dataset.

These summarise the same generations the analytics API sees, so the pipeline can reconcile the
two; each function returns the JSON payload of one endpoint.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from openrouter_emulator.analytics_catalogue import KEY_WORKSPACE
from openrouter_emulator.columns import BYOK
from openrouter_emulator.dataset import UsageDataset
from openrouter_emulator.isotime import utc_today
from openrouter_emulator.live_shapes import LIVE, activity_date, live_activity_row
from openrouter_emulator.organisation import ACCOUNT_OWNER, API_KEYS, ENDPOINTS, MEMBERS, MODELS, WORKSPACES
from openrouter_emulator.protocol import ApiError, query_param


def activity(dataset: UsageDataset, params: Mapping[str, list[str]], now: float, shapes: str = LIVE) -> dict[str, Any]:
    """Rows per date x model x provider endpoint for the last 30 completed UTC days; live (`shapes`) with a
    `YYYY-MM-DD 00:00:00` date, `byok_requests` and `cached_tokens`, in the live key order."""
    today = utc_today(now)
    allowed = [today - dt.timedelta(days=k) for k in range(30, 0, -1)]
    date_text = query_param(params, "date")
    if date_text is not None:
        try:
            date = dt.date.fromisoformat(date_text)
        except ValueError:
            raise ApiError(400, "Invalid date format. Use YYYY-MM-DD") from None
        if date not in allowed:
            raise ApiError(400, "Date must be within the last 30 (completed) UTC days")
        dates = [date]
    else:
        dates = allowed
    group_by = query_param(params, "group_by")
    if group_by not in (None, "workspace"):
        raise ApiError(400, "group_by must be 'workspace'")
    key_ok = np.ones(len(API_KEYS), dtype=bool)
    key_hash, user_id, workspace_id = (query_param(params, n) for n in ("api_key_hash", "user_id", "workspace_id"))
    for i, key in enumerate(API_KEYS):
        key_ok[i] = ((key_hash is None or key.hash == key_hash.lower())
                     and (user_id is None or MEMBERS[key.member].clerk_id == user_id)
                     and (workspace_id is None or WORKSPACES[key.workspace].workspace_id == workspace_id))
    split = len(WORKSPACES) if group_by == "workspace" else 1
    items: list[dict[str, Any]] = []
    for date in dates:
        day = dataset.day(date, now)
        if day is None:
            continue
        c = day.columns
        rows = np.flatnonzero(day.visible(now) & key_ok[c.api_key])
        group = c.endpoint[rows].astype(np.int64) * split + (KEY_WORKSPACE[c.api_key[rows]] if split > 1 else 0)
        size = len(ENDPOINTS) * split
        sums = {name: np.bincount(group, weights=weights, minlength=size) for name, weights in (
            ("usage", c.usage[rows]), ("prompt_tokens", c.tokens_prompt[rows].astype(np.float64)),
            ("completion_tokens", c.tokens_completion[rows].astype(np.float64)),
            ("reasoning_tokens", c.tokens_reasoning[rows].astype(np.float64)),
            ("cached_tokens", c.tokens_cached[rows].astype(np.float64)),
            ("byok_requests", ((c.flags[rows] & BYOK) > 0).astype(np.float64)),
            ("byok_usage_inference", np.where((c.flags[rows] & BYOK) > 0, np.nan_to_num(c.upstream_cost[rows]), 0.0)))}
        requests = np.bincount(group, minlength=size)
        for g in np.flatnonzero(requests):
            endpoint = ENDPOINTS[g // split]
            model = MODELS[endpoint.model]
            item: dict[str, Any] = {
                "date": activity_date(date, shapes), "model": model.slug, "model_permaslug": model.permaslug,
                "endpoint_id": endpoint.endpoint_id, "provider_name": endpoint.provider,
                "usage": float(sums["usage"][g]), "byok_usage_inference": float(sums["byok_usage_inference"][g]),
                "requests": int(requests[g]), "prompt_tokens": int(sums["prompt_tokens"][g]),
                "completion_tokens": int(sums["completion_tokens"][g]),
                "reasoning_tokens": int(sums["reasoning_tokens"][g]),
            }
            if split > 1:
                item["workspace_id"] = WORKSPACES[g % split].workspace_id
            if shapes == LIVE:
                item["cached_tokens"] = int(sums["cached_tokens"][g])
                item["byok_requests"] = int(sums["byok_requests"][g])
                item = live_activity_row(item)
            items.append(item)
    return {"data": items}


def _usage_since(dataset: UsageDataset, since: dt.date, now: float) -> tuple[float, float]:
    """(OpenRouter usage, BYOK upstream usage) of the days built so far, from `since` on."""
    usage = byok = 0.0
    for date in dataset.dates(now):
        day = dataset.built_day(date)
        if date >= since and day is not None:
            visible = day.visible(now)
            usage += float(day.columns.usage[visible].sum())
            byok += float(np.nansum(day.columns.upstream_cost[visible]))
    return usage, byok


def key_info(dataset: UsageDataset, key: str, management: bool, now: float) -> dict[str, Any]:
    digest = hashlib.sha256(key.encode()).hexdigest()
    today = utc_today(now)
    periods = {"": dt.date.min, "_daily": today, "_weekly": today - dt.timedelta(days=today.weekday()),
               "_monthly": today.replace(day=1)}
    data: dict[str, Any] = {
        "label": f"sk-or-v1-{digest[:3]}...{digest[-4:]}", "limit": None, "limit_remaining": None,
        "limit_reset": None, "include_byok_in_limit": False, "is_free_tier": False,
        "is_management_key": management, "is_provisioning_key": management, "creator_user_id": ACCOUNT_OWNER.clerk_id,
        "expires_at": None,
        "rate_limit": {"requests": -1, "interval": "10s", "note": "This field is deprecated and safe to ignore."},
    }
    for suffix, since in periods.items():
        usage, byok = (0.0, 0.0) if management else _usage_since(dataset, since, now)
        data[f"usage{suffix}"] = usage
        data[f"byok_usage{suffix}"] = byok
    return {"data": data}


def credits_info(dataset: UsageDataset, now: float) -> dict[str, Any]:
    usage = 1843.27 + _usage_since(dataset, dt.date.min, now)[0]  # spend from before the emulated days
    return {"data": {"total_credits": float(500 * math.ceil(usage / 500) + 2000), "total_usage": usage}}
