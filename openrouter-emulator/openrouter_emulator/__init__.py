"""A local, spec-faithful emulator of the OpenRouter usage API, for tests and demos without network.

`process.run_emulator` starts one as a subprocess; `server` holds the HTTP server, routing, control API
and CLI flags; `analytics_catalogue`, `analytics_query` and `analytics` the analytics API's catalogue,
request validation and engine; `account` the activity, key and credits endpoints; `protocol` the
request, response and error shapes they share; `dataset` the deterministic synthetic usage; `faults`
the switchable misbehaviour.
"""

from openrouter_emulator.process import EmulatorProcess, run_emulator, start_emulator

__all__ = ["EmulatorProcess", "run_emulator", "start_emulator"]
