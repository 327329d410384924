"""``python -m recurl.bench {memory,kernels,ppo,dqn,peers}``: benchmarks that print markdown tables (copied into
BENCHMARKS.md)."""

from __future__ import annotations

import importlib
import sys

USAGE = "usage: python -m recurl.bench {memory,kernels,ppo,dqn,peers} [options]  (--help after the name for options)"


def main() -> None:
    suite = sys.argv[1] if len(sys.argv) > 1 else None
    if suite in ("memory", "kernels", "peers"):
        module = importlib.import_module(f"recurl.bench.{suite}")
        module.main(sys.argv[2:])
    elif suite in ("ppo", "dqn"):
        from recurl.bench import agent

        agent.main(sys.argv[2:], suite)
    else:
        print(USAGE)
        sys.exit(2)


if __name__ == "__main__":
    main()
