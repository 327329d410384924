"""``python -m recurl.bench {memory,ppo}``: benchmarks that print markdown tables (copied into BENCHMARKS.md)."""

from __future__ import annotations

import importlib
import sys

SUITES = {"memory": "recurl.bench.memory", "ppo": "recurl.bench.ppo"}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in SUITES:
        print(f"usage: python -m recurl.bench {{{','.join(SUITES)}}} [options]  (--help after the name for options)")
        sys.exit(2)
    importlib.import_module(SUITES[sys.argv[1]]).main(sys.argv[2:])


if __name__ == "__main__":
    main()
