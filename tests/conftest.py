import os

import pytest
import torch

if not torch.cuda.is_available():
    # Triton kernels run on the CPU in Triton's interpreter; it must be chosen before triton is first imported.
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
