"""Training tests run torch on one thread: tiny models gain nothing from more, and a single thread stays fast
when other test processes share the CPU (OpenMP threads spin and stall under oversubscription)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
