"""A local, spec-faithful emulator of the OpenRouter usage API, for tests and demos without network.

`process.run_emulator` starts one as a subprocess; `server` holds the HTTP server and its CLI flags;
`dataset` the deterministic synthetic usage; `faults` the switchable misbehaviour.
"""

from usage_pipeline.openrouter.emulator.process import EmulatorProcess, run_emulator, start_emulator

__all__ = ["EmulatorProcess", "run_emulator", "start_emulator"]
