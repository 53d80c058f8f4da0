"""Regenerate the README's picture of the usage report, docs/report.png, and print what it measured.

    python -m usage_pipeline_tests.report_picture [--duckdb data/usage.duckdb] [--days 30] [--out docs/report.png]

Without --duckdb it first writes a realistic file in a temporary directory through the pipeline's write
paths (usage_history: the emulator's organisation, 10 captured days after 20 aggregate-only ones, quieter
weekends, and today's hours so far as the `usage_today` job stores them). The report is drawn by the same
code and the same headless Chromium as the browser test, 1200 px wide, full page.
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from pathlib import Path

from usage_pipeline.report import write_report
from usage_pipeline.report.period import last_completed_day
from usage_pipeline_tests.browser import open_page
from usage_pipeline_tests.usage_history import write_today, write_usage_file

REPO_ROOT = Path(__file__).resolve().parents[1]


def realistic_file(directory: Path) -> Path:
    """10 captured days after 20 aggregate-only days, weekends at 40% of a weekday's 2,000 generations, and
    today's hours so far."""
    until = last_completed_day()
    days = [until - dt.timedelta(days=n) for n in range(29, -1, -1)]
    path = directory / "usage.duckdb"
    write_usage_file(path, exact_days=days[20:], aggregate_days=days[:20],
                     generations_per_day=lambda day: 800 if day.weekday() >= 5 else 2000)
    write_today(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duckdb", type=Path, help="a published DuckDB file (default: a realistic one, made here)")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "report.png")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        source = args.duckdb or realistic_file(Path(temp))
        started = time.perf_counter()
        written = write_report(Path(temp) / "usage_report.html", duckdb_path=source, days=args.days)
        built = time.perf_counter() - started
        page = open_page(written.path.resolve().as_uri(), ready="document.body.dataset.charts !== 'pending'")
    if page.console_errors or page.page_errors or page.refused_requests:
        raise SystemExit(f"the report did not render cleanly: {page.console_errors} {page.page_errors} "
                         f"{page.refused_requests}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(page.screenshot)
    print(f"report: {written.summary()}; built in {built:.2f} s; "
          f"drawn by Chromium in {page.seconds:.2f} s (navigation to every chart rendered)")
    print(f"wrote {args.out} ({page.pixels.width}x{page.pixels.height} px, {len(page.screenshot):,} bytes)")


if __name__ == "__main__":
    main()
