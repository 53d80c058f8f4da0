"""A local, spec-faithful and switchably hostile emulator of the OpenRouter usage API, for tests and demos.

`process.run_emulator` starts one as a subprocess and `EmulatorProcess` drives its control API;
`server` holds the aiohttp server, routing, the hostile behaviours (latency, hangs, account rate limit,
CDN pages), the control API and the CLI flags; `analytics_catalogue`, `analytics_query` and `analytics`
the analytics API's catalogue, request validation and engine, `analytics_rows` what the engine groups;
`account` the activity, key and credits endpoints; `models` `GET /models`; `protocol` the request, response
and error shapes they share; `dataset` the deterministic synthetic usage (generations); `history` the
aggregate-only days older than them and the 31-day window; `faults` scripted faults, limiters and CDN
error pages; `isotime` the ISO 8601 parser; `loadtest` a throughput probe. Nothing here imports the
`usage_pipeline` project.
"""

from openrouter_emulator.process import EmulatorProcess, run_emulator, start_emulator

__all__ = ["EmulatorProcess", "run_emulator", "start_emulator"]
