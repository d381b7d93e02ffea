"""What a sweep checks before Ray starts or anything is written: the tracking store answers,
a cluster's address answers, every resource request fits the machine or the cluster. Each
problem is one ``SpaceError`` naming the field."""

from __future__ import annotations

import math
import os

from skipnet_sweep.sweep import ray_private
from skipnet_sweep.sweep.plan import Plan
from skipnet_sweep.sweep.space import SpaceError
from skipnet_sweep.sweep.tracking import tracker_for


def preflight(plan: Plan, address: str | None, num_cpus: int | None = None) -> None:
    """Everything that can be checked before Ray starts or anything is written: the tracking
    store answers, a cluster's address answers, every resource request fits this machine
    (a local run), and this Ray has the private names the driver uses. Each problem is one
    ``SpaceError`` naming the field.
    """
    _check_tracking(plan)
    if address is not None:
        _check_address(address)
    else:
        _check_local(plan, num_cpus)
    ray_private.check()


def _check_local(plan: Plan, num_cpus: int | None) -> None:
    """Every job fits a local instance of ``num_cpus`` (else this machine's) CPUs and this
    machine's GPUs: a local Ray cannot grow, and would wait forever."""
    import torch

    cpus = os.cpu_count() or 1
    if num_cpus is not None:
        need = max(ask for _, ask, unit in _requests(plan) if unit == "CPUs")
        least = max(1, math.ceil(need))
        if num_cpus < least:
            raise SpaceError(
                f"{plan.space.source}: --num-cpus: {num_cpus} is fewer than the {need:g} that "
                f"one job of this space asks for (resources); allowed: {least} or more, or "
                f"leave it out for this machine's {cpus}"
            )
        cpus = num_cpus
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    check_fits(plan, cpus, gpus, "this machine")


def _requests(plan: Plan) -> list[tuple[str, float, str]]:
    """What one job of the sweep reserves at most: (field, amount, "CPUs" or "GPUs")."""
    res = plan.space.resources
    return [
        ("resources.trial.cpu", res.trial.cpu, "CPUs"),
        ("resources.trial.gpu", res.trial.gpu, "GPUs"),
        ("resources.sp (workers x cpu)", res.sp.workers * res.sp.cpu, "CPUs"),
        ("resources.sp (workers x gpu)", res.sp.workers * res.sp.gpu, "GPUs"),
    ]


def worker_group_order(plan: Plan, cpus: float | None, gpus: float, where: str) -> str | None:
    """One line for ``--dry-run``: how many data-parallel shared jobs run at once on
    ``cpus``/``gpus`` (None: a cluster's, unknown before it is joined) and in which order
    (the searcher's, ``JobSearcher.footprint``); None when shared jobs are not data-parallel."""
    res = plan.space.resources.sp
    if not res.data_parallel or not plan.shared_jobs:
        return None
    order = ", ".join(j.id for j in plan.shared_jobs)
    group = f"{res.workers} workers x {res.cpu:g} CPU" + (f", {res.gpu:g} GPU" if res.gpu else "")
    if cpus is None:
        at_once = "as many at once as the cluster's CPUs and GPUs hold"
    else:
        fit = [cpus // (res.workers * res.cpu) if res.cpu else math.inf]
        if res.gpu:
            fit.append(gpus // (res.workers * res.gpu))
        n = int(min(fit))
        gpu = f", {gpus:g} GPUs" if res.gpu else ""
        at_once = f"{n} at a time on {cpus:g} CPUs{gpu} ({where})"
    return (
        f"  shared worker groups ({group} each): {at_once}, in this order: {order}; "
        "the trials use what they leave"
    )


def check_fits(plan: Plan, cpus: float, gpus: float, where: str) -> None:
    """Refuse a trial or a shared job's worker group that ``cpus``/``gpus`` cannot hold: Tune
    or Ray Train would wait for it forever."""
    for name, ask, unit in _requests(plan):
        have = cpus if unit == "CPUs" else gpus
        if ask > have:
            raise SpaceError(
                f"{plan.space.source}: {name}: asks for {ask:g} {unit} but {where} has "
                f"{have:g}; lower it{' or pass --address of a larger cluster' if unit == 'GPUs' else ''}"
            )


def _check_tracking(plan: Plan, timeout: float = 5.0) -> None:
    """An http(s) tracking server must answer within ``timeout`` seconds (a wrong URI would
    otherwise hang the sweep after Ray has started)."""
    import urllib.error
    import urllib.request

    uri = tracker_for(plan).tracking_uri
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as r:
            r.read(64)
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise SpaceError(
            f"{plan.space.source}: mlflow.tracking_uri: {uri} does not answer ({reason}); "
            "start the server or fix the URI"
        ) from None


def _check_address(address: str, timeout: float = 5.0) -> None:
    """A cluster given as ``host:port`` (or ``ray://host:port``) must accept a connection
    within ``timeout`` seconds: ``ray.init`` retries an unreachable one for minutes, silently.
    ``auto`` is left to Ray."""
    import socket

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except (OSError, OverflowError) as err:
        reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
        raise SpaceError(
            f"--address {address}: nothing answers at {host}:{port} ({reason}); start the "
            "cluster there (ray start --head) or fix the address"
        ) from None
