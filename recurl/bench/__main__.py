"""``python -m recurl.bench {memory,kernels,ppo,dqn,peers}``: benchmarks that print markdown tables (copied into
BENCHMARKS.md)."""

from __future__ import annotations

import argparse
import importlib
import sys

from recurl.command_line import Parser

#: Bench -> what it measures (``python -m recurl.bench BENCH --help`` for its options).
BENCHES = {
    "memory": "one memory layer, forward+backward: parallel vs stepwise vs nn.LSTM",
    "kernels": "the scan and each layer against cuDNN and a loop: time, bandwidth, memory (for GPUs)",
    "ppo": "PPO's end-to-end env steps/s per backbone, then a learning sweep over five POPGym tasks",
    "dqn": "the same for DQN",
    "peers": "recurl's PPO beside sb3-contrib's RecurrentPPO and a CleanRL-style LSTM PPO (CPU)",
}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = Parser(
        prog="python -m recurl.bench",
        usage="%(prog)s [-h] BENCH [options]",
        description="Benchmarks that print markdown tables (copied into BENCHMARKS.md):\n"
        + "\n".join(f"  {name:8} {what}" for name, what in BENCHES.items()),
        epilog="Each bench's options: python -m recurl.bench BENCH --help",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("bench", metavar="BENCH", choices=BENCHES, help="one of those above; its options follow it")
    bench = parser.parse_args(argv[:1]).bench
    if bench in ("ppo", "dqn"):
        from recurl.bench import agent

        agent.main(argv[1:], bench)
    else:
        importlib.import_module(f"recurl.bench.{bench}").main(argv[1:])


if __name__ == "__main__":
    main()
