"""Helpers shared by the sweep tests (test_space, test_sweep, test_cluster).

Ray isolation. Every Ray instance these tests start lives under its own short ``RAY_TMPDIR``
(``ray_tmpdir``), and is started from that directory: a local ``ray.init()`` then never
finds another user's ``ray start`` cluster (it looks for
``$RAY_TMPDIR/ray/ray_current_cluster``), and ``stop_ray_processes`` finds exactly that
instance's processes afterwards (``ray_processes``). ``ray stop`` is never used: it stops
every Ray process on the machine, other people's included.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from skipnet_sweep import metrics as M
from skipnet_sweep.run import main
from skipnet_sweep.sweep import Plan, load_space, make_plan

# A sweep that runs end to end in about 40 s on 2 CPU cores: 2 shared jobs (baseline and
# RNN-gated SP, one worker each, so each trains in its trial's process: Ray Train's data
# parallelism is test_cluster's) and 4 HRL trials.
TINY: dict[str, Any] = {
    "name": "tiny",
    "dataset": {
        "name": "synthetic",
        "synthetic": {"size": 256, "channels": 1, "image_size": 12, "classes": 4},
    },
    "backbones": ["cifar_resnet8"],
    "gates": ["rnn"],
    "baseline": True,
    "sp": {"iterations": 6, "batch_size": 32, "eval_every": 3},
    "hrl": {"iterations": 4, "batch_size": 32, "rl_weight": 1.0},
    "alpha": [0.0, 1.0, 2.0, 4.0],
    "resources": {"sp": {"workers": 1, "cpu": 1}, "trial": {"cpu": 1}},
    "max_concurrent_trials": 2,
    # Timing is measured, not asserted, in these tests: keep it short.
    "latency": {"batch_sizes": [1, 8], "warmup": 1, "repeats": 3},
}
TINY_TEST_SET = 256 // 4  # the synthetic test set holds a quarter of the training size

DELETE = object()  # ``write_space(..., changes={"baseline": DELETE})`` drops the field


def space_dict(name: str = "tiny", changes: dict[str, Any] | None = None) -> dict:
    """``TINY`` under ``name`` with dotted-key ``changes`` (``{"hrl.lr": 1.0}``) applied."""
    d = copy.deepcopy(TINY)
    d["name"] = name
    for key, value in (changes or {}).items():
        node = d
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        if value is DELETE:
            node.pop(last, None)
        else:
            node[last] = value
    return d


def write_space(folder: Path, name: str = "tiny", changes: dict[str, Any] | None = None) -> Path:
    """Write a space file into ``folder`` whose storage and MLflow store are in ``folder``
    too (``runs/`` and ``mlflow.db``); returns its path."""
    d = space_dict(name, changes)
    d.setdefault("storage_path", str(folder / "runs"))
    d.setdefault("mlflow", {"tracking_uri": tracking_uri(folder)})
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return path


def tracking_uri(folder: Path) -> str:
    return f"sqlite:///{folder / 'mlflow.db'}"


_EMPTY_STORE: list[Path] = []  # this test process's empty store with its schema made


def migrated_store(folder: Path) -> None:
    """Put an empty MLflow store whose schema is already made at ``tracking_uri(folder)``, a
    copy of one made once per test process. MLflow makes a new sqlite store's schema by
    running every migration (about 5 s of CPU, the same for every store): the whole-sweep
    tests start from such a store, as a re-run does; a sweep that makes its own store is
    tested elsewhere (the quickstart and every CLI test)."""
    if not _EMPTY_STORE:
        from mlflow.tracking import MlflowClient

        template = Path(tempfile.mkdtemp(prefix="skipnet-mlflow-")) / "mlflow.db"
        MlflowClient(tracking_uri=f"sqlite:///{template}").search_experiments()
        _EMPTY_STORE.append(template)
    shutil.copyfile(_EMPTY_STORE[0], folder / "mlflow.db")


def files_under(folder: Path) -> set[str]:
    """Every path under ``folder``, relative to it."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@contextlib.contextmanager
def patched_env(**env: str | None) -> Iterator[None]:
    """Set (or, with None, remove) environment variables for the duration of the block."""
    saved = {k: os.environ.get(k) for k in env}
    try:
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def cli(argv: list[str], cwd: str | Path | None = None, **env: str | None) -> tuple[int, str, str]:
    """Run ``skipnet_sweep.run.main(argv)`` in this process with ``env`` patched (and in
    ``cwd``: a local Ray instance's processes inherit it); returns (exit code, stdout,
    stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.ExitStack() as stack:
        if cwd is not None:
            stack.enter_context(contextlib.chdir(cwd))
        stack.enter_context(patched_env(**env))
        stack.enter_context(contextlib.redirect_stdout(out))
        stack.enter_context(contextlib.redirect_stderr(err))
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def local_ray_env(ray_dir: str) -> dict[str, str | None]:
    """Environment of a sweep on its own local Ray instance under ``ray_dir``."""
    return {"RAY_TMPDIR": ray_dir, "RAY_ADDRESS": None, "RAY_USAGE_STATS_ENABLED": "0"}


def local_sweep(argv: list[str], ray_dir: str, **env: str) -> tuple[int, str, str]:
    """``cli`` for a run on a local Ray instance of its own under ``ray_dir``, with ``env``
    added (its Ray processes inherit it)."""
    return cli(argv, cwd=ray_dir, **local_ray_env(ray_dir), **env)


def spawn_driver(
    space: Path,
    ray_dir: str,
    log: Path,
    *,
    new_session: bool = False,
    args: tuple[str, ...] = (),
    **env: str,
) -> subprocess.Popen:
    """Start ``python -m skipnet_sweep.run --space SPACE --num-cpus 2`` as a subprocess on a
    local Ray instance of its own under ``ray_dir`` (output to ``log``), with ``env`` added:
    for tests that kill a driver or one of its workers. ``new_session``: in a process group
    of its own, which a test signals as a terminal's Ctrl-C does (``os.killpg``); ``args``:
    more command-line arguments (``--plugin FILE``)."""
    full = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    full.update(RAY_TMPDIR=ray_dir, RAY_USAGE_STATS_ENABLED="0", **env)
    with open(log, "w") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "skipnet_sweep.run",
                "--space",
                str(space),
                "--num-cpus",
                "2",
                *args,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=full,
            cwd=ray_dir,
            start_new_session=new_session,
        )


# --- Ray processes ----------------------------------------------------------------------


def _process_table() -> dict[int, tuple[int, bytes, bytes, str]]:
    """pid -> (parent pid, command line, environment, working directory) of every live
    process this user may read (zombies and kernel threads left out)."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            cmd = Path(entry.path, "cmdline").read_bytes()
            environ = Path(entry.path, "environ").read_bytes()
            cwd = os.readlink(Path(entry.path, "cwd"))
            stat = Path(entry.path, "stat").read_text()
        except OSError:  # gone, or not ours to read
            continue
        if cmd:
            table[int(entry.name)] = (int(stat.rsplit(")", 1)[1].split()[1]), cmd, environ, cwd)
    return table


def _ancestors(pid: int, table: dict) -> set[int]:
    out = set()
    while pid in table and pid not in out:
        out.add(pid)
        pid = table[pid][0]
    return out


def ray_processes(ray_dir: str) -> dict[int, str]:
    """pid -> command of the live processes of the Ray instance(s) under ``ray_dir``.

    A process belongs to one when its command line names the directory (``gcs_server``,
    ``raylet``, the monitors), its working directory is under it (whatever was started from
    there, and Ray's actors, which work in the session's folders), its environment has
    ``RAY_TMPDIR=ray_dir``, or it descends from one that does. Ray's workers and agents
    rename themselves (``ray::DashboardAgent``) and that can overwrite what
    ``/proc/<pid>/environ`` shows, hence the several criteria. Linux only (/proc); this
    process and its ancestors are never included."""
    table = _process_table()
    skip = _ancestors(os.getpid(), table)
    env_entry = f"RAY_TMPDIR={ray_dir}".encode()
    in_cmd = ray_dir.rstrip("/").encode() + b"/"
    under = ray_dir.rstrip("/") + "/"
    members = {
        pid
        for pid, (_, cmd, environ, cwd) in table.items()
        if in_cmd in cmd or f"{cwd}/".startswith(under) or env_entry in environ.split(b"\0")
    }
    children: dict[int, list[int]] = {}
    for pid, (ppid, *_) in table.items():
        children.setdefault(ppid, []).append(pid)
    todo = list(members)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in members:
                members.add(child)
                todo.append(child)
    return {
        pid: table[pid][1].replace(b"\0", b" ").decode(errors="replace").strip()[:120]
        for pid in sorted(members - skip)
    }


def descendants(pid: int) -> set[int]:
    """The live descendants of ``pid`` (for a driver about to be killed: its Ray instance)."""
    table = _process_table()
    out, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        for child, (ppid, *_) in table.items():
            if ppid == parent and child not in out:
                out.add(child)
                todo.append(child)
    return out


def alive(pids: set[int]) -> dict[int, str]:
    """Those of ``pids`` still running (zombies excluded), with their commands."""
    table = _process_table()
    return {
        p: table[p][1].replace(b"\0", b" ").decode(errors="replace").strip()[:120]
        for p in sorted(pids)
        if p in table
    }


def stop_ray_processes(
    ray_dir: str, also: set[int] = frozenset(), timeout: float = 15.0
) -> dict[int, str]:
    """Stop the processes of the Ray instance(s) under ``ray_dir`` and those of ``also``
    still alive (SIGTERM; SIGKILL for what is left after half the timeout); returns what
    was found. Processes of other Ray instances are never touched."""

    def members() -> dict[int, str]:
        return {**ray_processes(ray_dir), **alive(set(also))}

    found = members()
    deadline = time.monotonic() + timeout
    for sig, until in ((signal.SIGTERM, deadline - timeout / 2), (signal.SIGKILL, deadline)):
        left = members()
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        while left and time.monotonic() < until:
            time.sleep(0.2)
            left = members()
        if not left:
            break
    return found


@contextlib.contextmanager
def ray_tmpdir(prefix: str = "skr") -> Iterator[str]:
    """A fresh, short ``RAY_TMPDIR`` (Ray's unix socket paths must stay under 107 bytes, so
    not under pytest's long tmp paths); every process left under it is stopped on exit."""
    d = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    try:
        yield d
    finally:
        stop_ray_processes(d)
        shutil.rmtree(d, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- what a sweep left behind --------------------------------------------------------------


def tune_result_rows(storage: Path) -> dict[str, int]:
    """Trial directory name -> number of result rows Tune wrote for it."""
    return {
        p.parent.name: len(p.read_text().splitlines())
        for p in sorted(Path(storage, "tune").glob("*/*/result.json"))
    }


def tune_result_records(storage: Path) -> list[dict]:
    """Every result row of every trial (Tune adds ``node_ip``, ``hostname``, ``pid``)."""
    rows = []
    for p in sorted(Path(storage, "tune").glob("*/*/result.json")):
        rows += [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    return rows


def tune_snapshot_status(storage: Path) -> dict[str, str]:
    """Trial directory name -> status in Tune's last experiment snapshot (what a restore
    starts from). Reads Tune's private state file; {} where its format is not understood."""
    out = {}
    for state in sorted(Path(storage, "tune").glob("*/experiment_state-*.json")):
        try:
            for entry in json.loads(state.read_text())["trial_data"]:
                trial = json.loads(entry[0])
                out[trial["custom_dirname"]] = trial["status"]
        except (ValueError, KeyError, IndexError, TypeError):
            return {}
    return out


@dataclass(frozen=True)
class RunInfo:
    """What a test compares of one MLflow run before and after something happened."""

    run_id: str
    trial_id: str | None
    stage: str | None
    status: str
    end_time: int | None
    top1_points: int


class Mlflow:
    """Read access to one sweep's MLflow store, as the report would read it.

    Args:
        uri: tracking URI.
        experiment: experiment name (the space name by default).
    """

    def __init__(self, uri: str, experiment: str):
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        self.experiment = experiment

    @property
    def experiment_id(self) -> str | None:
        exp = self.client.get_experiment_by_name(self.experiment)
        return exp.experiment_id if exp else None

    def runs(self, filter_string: str = "") -> list:
        exp = self.experiment_id
        if exp is None:
            return []
        return list(self.client.search_runs([exp], filter_string, max_results=1000))

    def parents(self) -> list:
        return self.runs("tags.stage = 'sweep'")

    def parent(self):
        (parent,) = self.parents()
        return parent

    def children(self, parent_id: str) -> list:
        return self.runs(f"tags.`mlflow.parentRunId` = '{parent_id}'")

    def info(self, run) -> RunInfo:
        t = run.data.tags
        return RunInfo(
            run.info.run_id,
            t.get("skipnet.trial_id"),
            t.get("stage"),
            run.info.status,
            run.info.end_time,
            len(self.client.get_metric_history(run.info.run_id, "top1")),
        )

    def snapshot(self) -> dict[str, RunInfo]:
        """Run id -> RunInfo of every run of the experiment."""
        return {r.info.run_id: self.info(r) for r in self.runs()}


def seed_sp_cache(
    src_storage: Path, dst_storage: Path, space: Path, stages: tuple[str, ...] | None = None
) -> int:
    """Copy the cached SP/baseline results that ``space``'s plan needs (those of ``stages``
    only, if given) from a finished sweep's storage, through the plan's own cache paths
    (``Plan.checkpoint``): a sweep that only differs in alpha finds them under the same keys.
    Returns how many were copied; a missing one fails the calling test."""
    from skipnet_sweep.sweep import load_space, make_plan

    plan = make_plan(load_space(str(space)))
    jobs = [j for j in plan.shared_jobs if stages is None or j.config.train.phase in stages]
    for job in jobs:
        src = plan.checkpoint(job, src_storage)
        assert src.is_file(), f"no cached {job.id} under {src_storage}"
        shutil.copytree(src.parent, plan.checkpoint(job, dst_storage).parent)
    return len(jobs)


def wait_for(predicate, timeout: float, interval: float = 0.25, what: str = "condition"):
    """Poll ``predicate()`` until it returns something truthy (returned) or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# --- listening sockets (Linux: /proc) ------------------------------------------------------

LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}
WILDCARD = {"0.0.0.0", "::"}


def wait_for_evaluation(driver, log: Path, mlflow: Mlflow, job_id: str, after: int = 0) -> int:
    """Until the run of job ``job_id`` has logged an evaluation past step ``after`` (so a
    checkpoint of it exists); returns that step. Fails if ``driver`` (a Popen writing to
    ``log``) exits first."""

    def evaluated():
        if driver.poll() is not None:
            raise AssertionError(f"the driver exited early:\n{log.read_text()[-3000:]}")
        try:
            runs = mlflow.runs(f"tags.`{M.TAG_TRIAL_ID}` = '{job_id}'")
        except Exception:  # the store is being created by the driver
            return None
        if not runs:
            return None
        steps = [m.step for m in mlflow.client.get_metric_history(runs[0].info.run_id, M.TOP1)]
        return max(steps) if steps and max(steps) > after else None

    return wait_for(
        evaluated, 240, interval=0.2, what=f"an evaluation of {job_id} past step {after}"
    )


def _listening_sockets() -> dict[str, tuple[str, int]]:
    """Socket inode -> (address, port) of every listening TCP socket of this machine."""
    out = {}
    for family, table in ((socket.AF_INET, "/proc/net/tcp"), (socket.AF_INET6, "/proc/net/tcp6")):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # TCP_LISTEN
                continue
            ip_hex, port_hex = fields[1].split(":")
            raw = bytes.fromhex(ip_hex)
            # The kernel prints each 32-bit word of the address in host (little-endian) order.
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            out[fields[9]] = (socket.inet_ntop(family, raw), int(port_hex, 16))
    return out


def listeners(pids) -> dict[int, set[tuple[str, int]]]:
    """pid -> the (address, port) pairs its open sockets listen on."""
    sockets = _listening_sockets()
    out: dict[int, set[tuple[str, int]]] = {}
    for pid in pids:
        found = set()
        with contextlib.suppress(OSError):  # the process ended meanwhile
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:[") and target[8:-1] in sockets:
                        found.add(sockets[target[8:-1]])
        out[pid] = found
    return out


def train_shared_jobs(space: Path) -> None:
    """Train ``space``'s shared jobs (SP, the baseline) in this process, without Ray, and
    publish each into the plan's cache as the sweep does (``cache.publish``: weights,
    evaluation files, the job's record): a sweep of ``space`` then finds them verified and
    only runs its trials. Seconds for TINY, against about a minute per Ray Train job."""
    from skipnet_sweep import metrics as M
    from skipnet_sweep.runner import run_stage
    from skipnet_sweep.sweep import cache, load_space, make_plan
    from skipnet_sweep.sweep.plan import MODEL_FILE

    plan = make_plan(load_space(str(space)))
    for job in plan.shared_jobs:
        with tempfile.TemporaryDirectory() as d:
            run_stage(
                plan.config_of(job),
                Path(d) / MODEL_FILE,
                device="cpu",
                progress=False,
                artifacts=Path(d) / M.ARTIFACT_DIR,
                method=plan.method(job.method),
            )
            cache.publish(Path(d), MODEL_FILE, plan.checkpoint(job), job, plan.store)


# --- whole sweeps of the test modules (test_sweep*.py) ---------------------------------------


@dataclass
class Sweep:
    """One finished sweep: its space, plan, MLflow store and what the CLI said."""

    space: Path
    plan: Plan
    mlflow: Mlflow
    code: int
    out: str
    err: str

    @property
    def storage(self) -> Path:
        return self.plan.storage

    def argv(self) -> list[str]:
        return ["--space", str(self.space), "--num-cpus", "2"]


def run_sweep(space: Path, ray_dir: str, **env: str) -> Sweep:
    """Run ``space`` on a local Ray instance of its own under ``ray_dir``, in this process
    (``env`` added)."""
    plan = make_plan(load_space(str(space)))
    if plan.space.mlflow.tracking_uri == tracking_uri(space.parent):
        migrated_store(space.parent)
    code, out, err = local_sweep(["--space", str(space), "--num-cpus", "2"], ray_dir, **env)
    return Sweep(space, plan, Mlflow(tracking_uri(space.parent), plan.space.name), code, out, err)


def by_stage(runs: list) -> dict[str, list]:
    out: dict[str, list] = {}
    for r in runs:
        out.setdefault(r.data.tags.get(M.TAG_STAGE), []).append(r)
    return out
