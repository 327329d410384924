"""recurl: reinforcement learning with memory.

``recurl.load_policy(run)`` loads a trained run's ``Policy``; the CLI entry points are ``python -m recurl.train``,
``recurl.evaluate``, ``recurl.record``, ``recurl.export``, ``recurl.compare``, ``recurl.suite`` and ``recurl.bench``.
"""

from __future__ import annotations


def __getattr__(name: str):
    # Loaded on first use: ``import recurl.kernels`` (say) should not import the agents, envs and torch's optimizers.
    if name in ("Policy", "load_policy"):
        from recurl import policy

        return getattr(policy, name)
    raise AttributeError(f"module 'recurl' has no attribute {name!r}")


__all__ = ["Policy", "load_policy"]
