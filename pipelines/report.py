"""DVC stage `report`: reports/index.html, the run in one self-contained page (no request leaves the machine).

It reads no params, so it does not use `pipelines._stage` (which brings the config code, and would re-run this stage
when that changes); a missing or unreadable input ends it the same way: one line naming it, exit status 2.
"""

from __future__ import annotations

import sys
import time

from pipelines._paths import REPORT, REPORT_INPUTS
from tada.report.run import RunPaths, write_report


def main() -> int:
    started = time.perf_counter()
    try:
        size = write_report(RunPaths.under(".", REPORT_INPUTS), REPORT)
    except (FileNotFoundError, ValueError) as e:
        print(f"report: {e}", file=sys.stderr)
        return 2
    print(f"report: {REPORT} ({size / 1024:.0f} KiB, {time.perf_counter() - started:.2f} s); open it in a browser")
    return 0


if __name__ == "__main__":
    sys.exit(main())
