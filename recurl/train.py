"""``python -m recurl.train [overrides]``: train an agent with a memory backbone on an environment
(``recurl.training`` says what a run does and writes).

This module is only the command line. It checks the command line (``recurl.cli_errors``) before torch and the agents
are imported, so that a mistake costs a second, not four, then hands the command to Hydra and ``hydra_main``."""

from __future__ import annotations

import sys

from recurl.cli_errors import command_line_error, with_saved_groups


def main() -> None:
    """A mistake on the command line is one line and exit code 2 before Hydra makes any folder; then Hydra runs
    ``recurl.training.hydra_main``. Beside ``resume=``, both see the resumed run's agent, backbone and env groups
    (``with_saved_groups``)."""
    argv = with_saved_groups(sys.argv[1:])
    problem = command_line_error(argv)
    if problem:
        print(f"recurl.train: error: {problem}", file=sys.stderr)
        sys.exit(2)
    sys.argv[1:] = argv
    from recurl.training import hydra_main

    hydra_main()


if __name__ == "__main__":
    main()
