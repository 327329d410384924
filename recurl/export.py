"""``python -m recurl.export RUN --out FILE``: a trained run's stepwise policy as one ONNX file.

    python -m recurl.export RUN --out policy.onnx [--checkpoint PATH]

The file computes one step of the policy for a batch of envs — observation, reset flag and state in; the most likely
action and the next state out — so it acts in constant memory however long an episode runs, as the recurrent form of
the backbones is meant to (``recurl.onnx_graph`` lists the inputs and outputs; the README shows a loop). The batch
dimension is dynamic. The model's metadata (key ``recurl``, JSON) names every input and output with its shape, dtype
and role, and each state input's value at an episode's start; ``initial_state`` and ``observation_inputs`` build the
feeds in Python.

The graph is made by ``torch.onnx.export``'s dynamo exporter (``torch.export``, then onnxscript's translation), and
the written file is checked against the torch module with onnxruntime before it replaces ``FILE``. It needs the
``[export]`` extra: ``pip install "recurl[export]"``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from recurl.atomic_file import replaced_by
from recurl.checkpoint import CheckpointError
from recurl.command_line import Parser
from recurl.envs import resolve_env_id
from recurl.onnx_graph import PolicyStep, TensorSpec, observation_inputs
from recurl.policy import Policy, default_checkpoint, load_policy

#: What the exporter imports (onnxscript translates torch.export's graph) and what the check runs the file with.
EXTRA_MODULES = ("onnx", "onnxscript", "onnxruntime")
INSTALL = 'pip install "recurl[export]" (in a checkout: pip install -e ".[export]")'
METADATA_KEY = "recurl"


class ExportMismatchError(RuntimeError):
    """The exported file computes something else than the torch policy it was made from (a bug in the exporter)."""


@dataclass(frozen=True)
class ExportedPolicy:
    path: Path
    seconds: float
    size_bytes: int


def check_extra() -> None:
    missing = [name for name in EXTRA_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise ValueError(f"exporting needs the [export] extra ({', '.join(missing)} missing): {INSTALL}")


def _spec_json(spec: TensorSpec, role: str) -> dict[str, Any]:
    entry = {"name": spec.name, "shape": ["batch", *spec.shape], "dtype": str(spec.dtype).removeprefix("torch."),
             "role": role}
    if spec.initial is not None:
        entry["initial"] = spec.initial
    return entry


def describe(step: PolicyStep, policy: Policy, checkpoint: Path | None) -> dict[str, Any]:
    """The metadata stored in the file: what each input and output is."""
    config = policy.config
    states = [spec.name for spec in step.state_specs]
    roles = ["action", "agent_action"] + [f"next {name}" for name in states]
    return {
        "format": 1,
        "env": {
            "suite": str(config.env.suite), "id": resolve_env_id(str(config.env.suite), str(config.env.id)),
            "max_episode_steps": config.env.max_episode_steps,
        },
        "agent": str(config.agent.name),
        "memory": OmegaConf.to_container(config.memory),
        "checkpoint": str(checkpoint) if checkpoint is not None else None,
        "batch": "dynamic: dimension 0 of every input and output",
        "inputs": [_spec_json(s, "observation") for s in step.observation_specs]
        + [_spec_json(s, s.name) for s in step.control_specs]
        + [_spec_json(s, "state") for s in step.state_specs],
        "outputs": [_spec_json(s, role) for s, role in zip(step.output_specs, roles)],
        "state": states,
        "notes": (
            "Feed next_<name> back as <name>. reset is true at an episode's first observation: every state row "
            "with reset true is replaced by its initial value inside the graph, so any start state works. action is "
            "in the env's format (indices offset by the space's start, MultiDiscrete shaped, Box clipped); "
            "agent_action in the agent's (PPO: the distribution's mode, Box unclipped; DQN: the argmax of Q, a "
            "flat index). prev_reward is the reward that came with the observation."
        ),
    }


@contextlib.contextmanager
def _quiet():
    """The exporter's warnings (deprecations, optional torchvision ops) and progress lines say nothing to a user."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _root_cause(error: BaseException) -> str:
    """The first line of the innermost cause: torch.onnx's own message is a page of advice around it."""
    while error.__cause__ is not None:
        error = error.__cause__
    return str(error).strip().splitlines()[0]


def export_onnx(policy: Policy, path: Path, checkpoint: Path | None = None) -> ExportedPolicy:
    """Write ``policy``'s stepwise form to ``path`` (replaced only once the new file is checked)."""
    check_extra()
    if policy.device.type != "cpu":
        raise ValueError(f"export a policy loaded on the CPU (recurl.load_policy(run)), not on {policy.device}")
    start = time.perf_counter()
    step = PolicyStep(policy).eval()
    example = step.example_inputs(2)
    batch = torch.export.Dim("batch")
    metadata = describe(step, policy, checkpoint)
    try:
        with _quiet():
            program = torch.onnx.export(
                step, example, dynamo=True, verbose=False, external_data=False,
                input_names=[spec.name for spec in step.input_specs],
                output_names=[spec.name for spec in step.output_specs],
                dynamic_shapes=(tuple({0: batch} for _ in example),),
            )
    except torch.onnx.errors.OnnxExporterError as error:
        memory = policy.config.memory.name
        raise ValueError(f"memory {memory} cannot be exported to ONNX: {_root_cause(error)}") from None
    program.model.metadata_props[METADATA_KEY] = json.dumps(metadata)
    program.model.doc_string = f"recurl stepwise policy of {metadata['env']['id']}; metadata key {METADATA_KEY!r}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with replaced_by(path) as tmp:
            with _quiet():
                program.save(tmp, external_data=False)
            check_against_torch(step, tmp, label=str(path))
    except OSError as error:  # a folder that is a file or cannot be made, a file system that refuses it
        raise ValueError(f"cannot write {path}: {error.strerror} ({error.filename}); choose another path") from None
    return ExportedPolicy(path, time.perf_counter() - start, path.stat().st_size)


def check_against_torch(step: PolicyStep, path: Path, label: str, steps: int = 3, batch_size: int = 3) -> None:
    """Run the file with onnxruntime for a few steps of sampled observations (episodes starting at different steps)
    and compare its actions and states with the torch module's; ``label`` names the file in the error."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [spec.name for spec in step.input_specs]
    inputs = list(step.example_inputs(batch_size, seed=1))
    state_at = len(names) - len(step.state_specs)
    reset_at = names.index("reset")
    for t in range(steps):
        if t:
            inputs[reset_at] = torch.arange(batch_size) == t % batch_size
        with torch.no_grad():
            expected = step(*inputs)
        got = session.run(None, {name: value.numpy() for name, value in zip(names, inputs)})
        for spec, want, have in zip(step.output_specs, expected, got):
            close = np.array_equal(want.numpy(), have) if not want.is_floating_point() else np.allclose(
                want.numpy(), have, rtol=1e-4, atol=1e-5, equal_nan=True
            )
            if not close:
                raise ExportMismatchError(f"{label}: onnxruntime's {spec.name} differs from torch's at step {t}")
        inputs[state_at:] = expected[2:]


def metadata(session) -> dict[str, Any]:
    """What ``describe`` stored in the file an onnxruntime session runs: the env, the inputs and outputs."""
    return json.loads(session.get_modelmeta().custom_metadata_map[METADATA_KEY])


def initial_state(session, batch_size: int = 1) -> dict[str, np.ndarray]:
    """The state inputs of ``batch_size`` fresh episodes, read from an onnxruntime session's metadata."""
    states = [spec for spec in metadata(session)["inputs"] if spec["role"] == "state"]
    return {
        spec["name"]: np.full([batch_size, *spec["shape"][1:]], np.asarray(spec["initial"], dtype=spec["dtype"]))
        for spec in states
    }


def main(argv: list[str] | None = None) -> None:
    parser = Parser(prog="python -m recurl.export", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, metavar="RUN")
    parser.add_argument("--out", type=Path, required=True, metavar="FILE", help="the file to write")
    parser.add_argument("--checkpoint", type=Path, help="default: RUN/checkpoints/final.pt, else latest.pt")
    args = parser.parse_args(argv)
    if not args.run_dir.is_dir():
        parser.refuse(f"{args.run_dir} is not a folder")
    if args.out.is_dir():
        parser.refuse(f"--out {args.out} is a folder; give a file name such as policy.onnx")
    try:
        check_extra()
        checkpoint = args.checkpoint or default_checkpoint(args.run_dir)
        exported = export_onnx(load_policy(checkpoint), args.out, checkpoint)
    except (ValueError, CheckpointError) as error:
        parser.refuse(str(error))
    except ExportMismatchError as error:
        parser.refuse(f"{error} (a bug: please report it)", code=1)
    print(f"{exported.path}: {exported.size_bytes / 1024:.0f} KiB in {exported.seconds:.1f} s", file=sys.stdout)


__all__ = ["ExportedPolicy", "check_against_torch", "export_onnx", "initial_state", "observation_inputs"]

if __name__ == "__main__":
    main()
