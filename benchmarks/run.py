"""The benchmark entry point: ``python benchmarks/run.py --suite cpu [--out DIR]``.

Each suite lives in its own ``suite_<name>.py`` with ``add_arguments(parser)`` and
``run(args) -> (Recorder, targets_met)``; add a GPU suite as ``suite_gpu.py`` and list it in SUITES.
Results: a table on stdout and one JSON file of self-contained rows in ``--out``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from natten.profiler.cli import add_timing_arguments

SUITES = ("cpu", "gpu", "gpu_unfused", "distributed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/run.py", description=__doc__.splitlines()[0])
    parser.add_argument("--suite", choices=SUITES, required=True)
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent.parent / "bench-results",
        help="folder for the JSON results (default: bench-results/ at the repository root)",
    )
    add_timing_arguments(parser, warmup=2, max_time=5.0)
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is not met")
    suites = {name: importlib.import_module(f"suite_{name}") for name in SUITES}
    for suite in suites.values():
        suite.add_arguments(parser)
    args = parser.parse_args(argv)
    rec, met = suites[args.suite].run(args)
    path = rec.write(args.out)
    print(f"\n{len(rec.rows)} rows written to {path}")
    return 1 if args.check and not met else 0


if __name__ == "__main__":
    sys.exit(main())
