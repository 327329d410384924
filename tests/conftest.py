import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

import recurl

if not torch.cuda.is_available():
    # Triton kernels run on the CPU in Triton's interpreter; it must be chosen before triton is first imported.
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """Tiny tensors: more intra-op threads only add contention (CI's two cores are shared). Use with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


#: The packaged Hydra config folder, as ``python -m recurl.train`` composes it.
CONF = str(Path(recurl.__file__).parent / "conf")


def compose_config(*overrides):
    """The training config with ``overrides``, composed as the CLI does (without running Hydra's app)."""
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("config", overrides=list(overrides))
