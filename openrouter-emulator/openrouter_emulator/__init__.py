"""A local, live-shaped and switchably hostile emulator of the OpenRouter usage API, for tests and demos.

`process.run_emulator` starts one as a subprocess and `EmulatorProcess` drives its control API.
`server` is the aiohttp front and the entry point, `cli_arguments` its flags, `runtime_config` the
settings the control API changes, `emulator` routing, auth and the order of every `/api/v1` answer,
`hostility` latency, hangs, 429s and CDN pages, `control` the `/_emulator` API, `stats` its counters.
`organisation` is the emulated world (models, endpoints, keys, people, apps), `columns` a window's
synthetic generations, `usage_day` one day's snapshot, `dataset` the per-day store, `history` the
aggregate-only days older than them and the 31-day window; `generation` and `generation_record` answer
`GET /generation`; `live_shapes` writes answers as the live API does (the default; `--shapes spec`: as the
spec's examples); `analytics_catalogue`, `analytics_query` and `analytics` the analytics API's catalogue,
request validation and engine,
`analytics_rows` what the engine groups; `account` the activity, key and credits endpoints; `models`
`GET /models`; `protocol` the request, response and error shapes they share; `faults` scripted faults,
the per-key analytics limiter and CDN error pages; `limiters` the account-wide limiters (fixed windows, token
bucket, sliding log); `isotime` the clock's units and the ISO 8601 parser; `loadtest` a
throughput probe. Broadcast: `broadcast_spans` builds one OTLP/HTTP JSON delivery per generation,
`broadcast_settings` checks where and how hostile to push, `broadcast` POSTs and counts (a day on demand),
`broadcast_live` pushes today as it completes. Nothing here imports the `usage_pipeline` project.
"""

from openrouter_emulator.process import EmulatorProcess, run_emulator, start_emulator

__all__ = ["EmulatorProcess", "run_emulator", "start_emulator"]
