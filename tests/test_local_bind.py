"""A local Ray instance started by the driver listens on loopback only.

``driver.start_ray`` without an address starts Ray with its node address at 127.0.0.1 (Ray
has no bind option; see the comment by ``ray.init`` in driver.py). Here: the address is set
for the ``ray.init`` and restored after it. What every process of a real local instance
listens on, with a shared job training, is read from /proc in tests/test_faults.py (one
sweep serves both: each costs CI about a minute).
"""

from __future__ import annotations

import pytest

from skipnet_sweep.sweep.driver import _loopback_node


def test_loopback_node_sets_and_restores_the_node_address():
    import ray
    from ray._private import ray_constants, services

    if ray.is_initialized():
        pytest.skip("a Ray instance of this process decides the address")
    before = services.get_node_ip_address()
    saved = ray_constants.ENABLE_RAY_CLUSTER
    with _loopback_node():
        assert services.get_node_ip_address() == "127.0.0.1"
    assert ray_constants.ENABLE_RAY_CLUSTER is saved
    assert services.get_node_ip_address() == before
