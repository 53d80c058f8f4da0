"""The record fetches against simulated servers in virtual time (`usage_pipeline_tests.simulated_openrouter`):
many shapes of the world, each the same for the same seed.

Each `GET /generation` waits a latency draw, passes one of the emulator's own account limiters (fixed
windows, token bucket, sliding log), and meets the fault mix (lone 429s, 503s, first-fetch 404s, hangs) by
seeded chance. No HTTP, and a busy machine changes no figure (only how long they take: about 20 s of CPU
per 5,000 records), so the figures isolate the pacing; `capture_throughput` measures the real thing. No
assertions: figures for the notes.

    python -m benchmarks.pace_simulation                     # 3 limiters x 3 latency shapes x 2 mixes, ~6 min
    python -m benchmarks.pace_simulation --records 20000 --seeds 5   # the spread, ~2 hours
"""

from __future__ import annotations

import argparse
import statistics

from openrouter_emulator.limiters import LIMITER_KINDS
from usage_pipeline_tests.simulated_openrouter import World, simulate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=5_000)
    parser.add_argument("--limit", type=float, default=500.0)
    parser.add_argument("--seeds", type=int, default=1)
    args = parser.parse_args()
    shapes = [("lognormal 0.6", {"sigma": 0.6}), ("lognormal 1.2", {"sigma": 1.2}),
              ("bimodal", {"tail": "bimodal", "sigma": 0.3})]
    mixes = [("none", {"lone_429": 0.0, "fault_503": 0.0, "first_404": 0.0}), ("all", {})]
    print(f"{args.records:,} records, limit {args.limit:g}/s, virtual time, {args.seeds} seeds each: median share of "
          "the limit (records/s over fetch seconds), range, requests per record, limiter refusals per record")
    for limiter in LIMITER_KINDS:
        for shape, latency in shapes:
            for mix, faults in mixes:
                runs = [simulate(World(limiter=limiter, limit=args.limit, seed=seed, **latency, **faults),  # type: ignore[arg-type]
                                 args.records) for seed in range(1, args.seeds + 1)]
                shares = sorted(r["share"] for r in runs)
                exact = all(r["records"] == args.records and not r["missing"] for r in runs)
                print(f"{limiter:12} {shape:14} {mix:5} median {statistics.median(shares):6.1%} "
                      f"range {shares[0]:.1%}-{shares[-1]:.1%} requests/record "
                      f"{statistics.median(r['requests'] / r['records'] for r in runs):.3f} refused/record "
                      f"{statistics.median(r['limited'] / r['records'] for r in runs):.3f} "
                      f"{'exact' if exact else 'INCOMPLETE'}", flush=True)


if __name__ == "__main__":
    main()
