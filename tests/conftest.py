"""Fixtures shared by the test modules."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from skipnet_sweep.models import SkipResNet, build_model


@pytest.fixture
def make_model() -> Callable[..., SkipResNet]:
    """``make_model(arch, gate=None, **kw)``: a registered network built under a fixed seed,
    so a failure reproduces with the same weights."""

    def make(arch: str, gate: str | None = None, **kw) -> SkipResNet:
        torch.manual_seed(0)
        return build_model(arch, gate=gate, **kw)

    return make


@pytest.fixture(scope="module")
def single_thread():
    """Run torch on one intra-op thread for the module: tiny tensors gain nothing from more,
    and on a busy machine spinning worker threads cost many times the work itself."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
