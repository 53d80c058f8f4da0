"""The emulator's command-line flags, shared by `openrouter-emulator`, `python -m openrouter_emulator`
and `usage-pipeline emulator`.

Each hostile behaviour is a flag here and a key of `POST /_emulator/config` (`runtime_config`), named in
brackets in the help, so a test can start with a behaviour or switch it on later.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

from openrouter_emulator.analytics import MAX_ANALYTICS_ROWS
from openrouter_emulator.broadcast_settings import TOKEN_ENV, BroadcastSettings, check_setting, parse_header_line
from openrouter_emulator.faults import RANDOM_FAULT_STATUSES
from openrouter_emulator.history import MAX_HISTORY_DAYS
from openrouter_emulator.limiters import FIXED, LIMITER_KINDS
from openrouter_emulator.live_shapes import LIVE, SHAPES
from openrouter_emulator.runtime_config import parse_statuses


def _number(kind: type, *, share: bool = False, positive: bool = False) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if not math.isfinite(value) or value < 0 or (share and value > 1) or (positive and value <= 0):
            what = "a share from 0 to 1" if share else "a positive number" if positive else "a non-negative number"
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in "invalid int value" messages
    return parse


def _history_days(text: str) -> int:
    value = int(text)
    if not 0 <= value <= MAX_HISTORY_DAYS:
        raise argparse.ArgumentTypeError(f"must be from 0 to {MAX_HISTORY_DAYS}, got {text!r}")
    return value


def _on_off(text: str) -> bool:
    if text.lower() in ("on", "true", "1", "yes"):
        return True
    if text.lower() in ("off", "false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"must be on or off, got {text!r}")


def _statuses(text: str) -> tuple[int, ...]:
    try:
        return parse_statuses(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _header(text: str) -> tuple[str, str]:
    try:
        return parse_header_line(text)
    except ValueError as exc:  # the message never repeats the value: it may be the token
        raise argparse.ArgumentTypeError(str(exc).replace("--broadcast-header: ", "")) from None


def _broadcast_setting(name: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return check_setting(name, float(text))
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc).replace(name, "value")) from None
    parse.__name__ = name
    return parse


_BROADCAST_HELP = {
    "drop_share": "share of deliveries never sent",
    "duplicate_share": "share sent a second time, later (the same body)",
    "delay_ms": "each POST waits a random delay up to this many ms",
    "reorder_window": "shuffle deliveries within windows of N (a partly filled window waits 1 s at most)",
    "error_span_share": "share sent as an error span (status 2 'The client has disconnected', no usage)",
    "gzip_share": "share sent with Content-Encoding: gzip",
    "string_ints_share": "share with intValue as decimal strings (the OTLP JSON mapping) instead of numbers",
    "mismatch_share": "share whose gen_ai.usage.total_cost differs from the GET /generation record",
    "concurrency": "POSTs in flight at most",
    "post_timeout_s": "timeout of one POST, s (counted as a connection error)",
}


def add_broadcast_arguments(parser: argparse.ArgumentParser) -> None:
    """`--broadcast-url` and its companions: live Broadcast of today's generations as they complete."""
    b = parser.add_argument_group(
        "Broadcast (live: OTLP/HTTP JSON deliveries of today's generations as they complete; a day on demand: "
        "POST /_emulator/broadcast)")
    b.add_argument("--broadcast-url", metavar="URL",
                   help="POST one delivery per generation here, after a connection test (X-Test-Connection: true)")
    b.add_argument("--broadcast-header", dest="broadcast_headers", metavar="'NAME: VALUE'", action="append",
                   type=_header, help=f"a static header of every POST (repeatable); or set {TOKEN_ENV} to send "
                                      "'Authorization: Bearer <token>' (never printed, not in the process list)")
    defaults = BroadcastSettings()
    for name, text in _BROADCAST_HELP.items():
        b.add_argument(f"--broadcast-{name.replace('_', '-')}", dest=f"broadcast_{name}", type=_broadcast_setting(name),
                       metavar="N", default=None, help=f"{text} (default {getattr(defaults, name)})")


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """The emulator's flags; `openrouter-emulator`, `python -m openrouter_emulator` and `usage-pipeline
    emulator` share them. Each hostile behaviour is also a runtime key of `POST /_emulator/config` (named in
    brackets)."""
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8787)
    parser.add_argument("--seed", type=int, default=7,
                        help="same seed, same generations for a UTC day, and the same latency/hang/fault draws "
                             "for the same order of requests")
    parser.add_argument("--generations-per-day", type=int, default=2000)
    parser.add_argument("--days", type=int, default=3, help="completed UTC days before today (plus today so far)")
    parser.add_argument("--history-days", dest="history_days", metavar="N", type=_history_days,
                        default=MAX_HISTORY_DAYS,
                        help="aggregate-only days up to N days back (at most 365; 0: none): the days older than "
                             "both --days and the 31-day generation window carry per-day analytics cells (model x "
                             "API key) and no generations [history_days]")
    parser.add_argument("--management-key", default="emulator-management-key")
    parser.add_argument("--inference-key", default="emulator-inference-key")
    parser.add_argument("--late-generations", type=int, default=0,
                        help="extra generations per completed day that appear only after --late-after seconds")
    parser.add_argument("--late-after", type=float, default=30.0)
    parser.add_argument("--loop", choices=("auto", "uvloop", "asyncio"), default="auto",
                        help="event loop: uvloop when it imports (auto), or the stdlib's")
    g = parser.add_argument_group("API behaviour (runtime keys of POST /_emulator/config in brackets)")
    g.add_argument("--analytics-max-rows", dest="analytics_max_rows", metavar="ROWS", type=_number(int),
                   default=MAX_ANALYTICS_ROWS,
                   help="server-side row cap; effective limit = min(requested, this, 10000) [analytics_max_rows]")
    g.add_argument("--analytics-rpm", dest="analytics_rpm", metavar="N", type=_number(int), default=64,
                   help="analytics requests per key per 60 s, sliding window; 0: off [analytics_rpm]")
    g.add_argument("--fresh-404-seconds", dest="fresh_404_seconds", metavar="S", type=_number(float), default=5.0,
                   help="GET /generation answers 404 this long after created_at [fresh_404_seconds]")
    g.add_argument("--generation-404-first", dest="generation_404_first", metavar="N", type=_number(int), default=0,
                   help="first N GETs of each id answer 404 [generation_404_first]")
    g.add_argument("--fault-rate", dest="fault_rate", metavar="SHARE", type=_number(float, share=True), default=0.0,
                   help="probability of a random fault per /api/v1 request, its status drawn from "
                        "--fault-statuses [fault_rate]")
    g.add_argument("--fault-statuses", dest="fault_statuses", metavar="LIST", type=_statuses,
                   default=RANDOM_FAULT_STATUSES,
                   help="comma-separated statuses --fault-rate draws from, equally likely (default "
                        f"{','.join(map(str, RANDOM_FAULT_STATUSES))}; e.g. 503); 429 and 503 carry Retry-After: 1 "
                        "[fault_statuses]")
    g.add_argument("--first-404-share", dest="first_404_share", metavar="SHARE", type=_number(float, share=True),
                   default=0.0,
                   help="share of generation ids (chosen from --seed and the id) whose first GET /generation "
                        "answers 404 and later GETs normally: records that lag [first_404_share]")
    g.add_argument("--shapes", dest="shapes", choices=SHAPES, default=LIVE,
                   help="live (default): answers shaped like the bodies the live API sends (dated permaslug "
                        "model, ms 'Z' created_at, fields it omits left out, 'YYYY-MM-DD 00:00:00' activity "
                        "dates); spec: the spec's example shapes (slug model, us '+00:00', all 45 fields) [shapes]")
    g.add_argument("--analytics-labels", dest="analytics_labels", type=_on_off, default=True, metavar="{on,off}",
                   help="on (default, as OpenRouter): analytics rows name model, api_key_id, app, user and "
                        "workspace by human-readable label (model 'OpenAI: GPT-4.1', never the /generation slug); "
                        "off: by underlying id (model permaslug, key hash). Filters always take ids "
                        "[analytics_labels]")
    g.add_argument("--inclusive-end", dest="inclusive_end", type=_on_off, default=False, metavar="{on,off}",
                   help="on: analytics time_range.end is inclusive (created_at <= end); off (default): "
                        "[start, end) [inclusive_end]")
    h = parser.add_argument_group("Hostile traffic behaviour (off by default)")
    h.add_argument("--latency-ms", dest="latency_median_ms", metavar="MS", type=_number(float), default=0.0,
                   help="median of a lognormal delay of every /api/v1 answer, ms; 0: none [latency_median_ms]")
    h.add_argument("--latency-sigma", dest="latency_sigma", metavar="SIGMA", type=_number(float), default=0.6,
                   help="sigma of that lognormal (0: constant; 0.6: p95 ~2.7x the median) [latency_sigma]")
    h.add_argument("--analytics-ms-per-1k-rows", dest="analytics_ms_per_1k_rows", metavar="MS", type=_number(float),
                   default=0.0,
                   help="extra delay of an analytics answer per 1,000 rows it returns [analytics_ms_per_1k_rows]")
    h.add_argument("--hang-share", dest="hang_share", metavar="SHARE", type=_number(float, share=True), default=0.0,
                   help="share of GET /generation answers that first hang --hang-seconds [hang_share]")
    h.add_argument("--hang-seconds", dest="hang_seconds", metavar="S", type=_number(float), default=60.0,
                   help="how long a hanging answer waits (a disconnecting client is dropped) [hang_seconds]")
    h.add_argument("--rate-limit", dest="rate_limit_rps", metavar="RPS", type=_number(float), default=0.0,
                   help="account-wide requests/s over all /api/v1 paths and keys (see --rate-limiter); over it "
                        "429 with X-RateLimit-Limit (the budget), X-RateLimit-Remaining: 0, X-RateLimit-Reset "
                        "(epoch ms when a request fits again) and, for --retry-after-share of them, Retry-After; "
                        "0: off [rate_limit_rps]")
    h.add_argument("--rate-limit-window", dest="rate_limit_window_s", metavar="S", type=_number(float, positive=True),
                   default=1.0, help="window of that limit, s; budget = round(rate x window), at least 1 "
                                     "[rate_limit_window_s]")
    h.add_argument("--rate-limiter", dest="rate_limiter", choices=LIMITER_KINDS, default=FIXED,
                   help="how the account limit spends its budget; refused requests never count. fixed "
                        "(default): budget per window, windows aligned to the epoch, reset at the window's end; "
                        "token-bucket: a bucket of budget tokens, full at first, refilled at the rate, reset "
                        "when one whole token is back; sliding: at most budget accepted in any trailing window, "
                        "reset when the oldest of them leaves it. Setting it at runtime starts it afresh "
                        "[rate_limiter]")
    h.add_argument("--retry-after-share", dest="retry_after_share", metavar="SHARE", type=_number(float, share=True),
                   default=0.5,
                   help="share of rate-limit 429s (and CDN pages) that carry Retry-After [retry_after_share]")
    h.add_argument("--html-error-share", dest="html_error_share", metavar="SHARE", type=_number(float, share=True),
                   default=0.0,
                   help="share of 429 (account limiter) and 5xx (faults) answers sent as a CDN's HTML error page "
                        "instead of JSON [html_error_share]")
    h.add_argument("--throttle-share", dest="throttle_share", metavar="SHARE", type=_number(float, share=True),
                   default=0.0,
                   help="share of GET /generation requests answered a lone 429 (Retry-After: 1, no X-RateLimit-* "
                        "headers: not the account limiter), body as OpenRouter's [throttle_share]")
    add_broadcast_arguments(parser)


CONTROL_HELP = """control API (tests switch behaviour at runtime, no restart):
  GET|POST|DELETE /_emulator/config   every key in brackets above; POST {"key": value, ...}; DELETE restores
  GET /_emulator/truth?date=D         the day's ground truth (count, ids, per model and key, the catalogue);
                                      for an aggregate-only history day its figures (aggregate_only, no ids)
  GET|POST|DELETE /_emulator/faults   scripted faults {"rules": [{"path", "status", "count", ...}]}
  POST /_emulator/generations         late generations {"date", "count", "at"?}
  POST|DELETE /_emulator/records      answer other values for a record {"overrides": {id: {field: value}}}
  GET|DELETE /_emulator/stats         answers per path/status, rates, peak, 429s (limiter, lone), random faults,
                                      first-GET 404s, HTML pages, hangs, in flight
  GET /_emulator/delays               the delay each of the last 10,000 /api/v1 answers was held (delay_ms)
  POST /_emulator/broadcast           push a day's deliveries {"day", "url", "headers"?, "limit"?, settings...};
                                      answers the counts when done
  GET /_emulator/broadcast            the live pusher's counts ({"live": false} without --broadcast-url)
All chance (latency, hangs, Retry-After, HTML pages, faults, lone 429s, lagging ids) is drawn from --seed."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="openrouter-emulator",
                                     description="Local, hostile emulator of the OpenRouter usage API",
                                     epilog=CONTROL_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_cli_arguments(parser)
    return parser
