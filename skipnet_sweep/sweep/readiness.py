"""What this machine lacks to run a plan, beyond the paths ``space.path_problems`` checks:
the dataset's files where the loaders (``skipnet_sweep.data``) look for them, and the GPUs
and CPUs the plan's jobs reserve against the ones here. ``run --dry-run`` lists them under
"not ready"; nothing is read beyond names and sizes (a dry-run must stay quick on ImageNet).

The layouts repeat the file names of ``skipnet_sweep.data``'s loaders, which offer no check
that does not load the data; ``tests/test_dry_run.py`` builds each layout and checks that
the loader then gets past looking for its files, so the two cannot drift apart unseen.
"""

from __future__ import annotations

import os
from pathlib import Path

from skipnet_sweep.data import DEFAULT_DOWNLOAD_ROOT, FASHION_MNIST_ROOT
from skipnet_sweep.sweep.estimate import job_resources, plan_jobs
from skipnet_sweep.sweep.plan import Plan
from skipnet_sweep.sweep.space import URI_RE

_FMNIST = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
_FMNIST += ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
# Each dataset: the folders (under the root) one of which must hold every file, the files,
# and where to get them.
_CIFAR_HOW = "the CIFAR python version from https://www.cs.toronto.edu/~kriz/cifar.html, extracted"
LAYOUTS: dict[str, tuple[tuple[str, ...], tuple[str, ...], str]] = {
    "fashion_mnist": (
        (".", "FashionMNIST/raw"),
        _FMNIST,
        "the four IDX files (.gz or not), e.g. `apt-get install dataset-fashion-mnist`",
    ),
    "cifar10": (
        ("cifar-10-batches-py", "."),
        tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",),
        _CIFAR_HOW,
    ),
    "cifar100": (("cifar-100-python", "."), ("train", "test"), _CIFAR_HOW),
    "svhn": (
        (".",),
        ("train_32x32.mat", "test_32x32.mat", "extra_32x32.mat"),
        "the cropped-digits .mat files from http://ufldl.stanford.edu/housenumbers/",
    ),
    "imagenet": (
        (".",),
        ("train/", "val/"),
        "ILSVRC2012 from https://image-net.org as train/ and val/, one folder per class",
    ),
}


def data_problems(name: str, root: str | None) -> list[str]:
    """Why the loaders would not find dataset ``name`` under ``root`` (None: where they
    look by default); empty when its files are there (or it reads none), and for a root
    that is no folder, which ``space.path_problems`` already names."""
    if name not in LAYOUTS or (
        root is not None and (URI_RE.match(root) or not os.path.isdir(root))
    ):
        return []
    folders, names, how = LAYOUTS[name]
    if root is None:
        if name == "imagenet":
            return [
                "dataset imagenet: no root; pass --data-root with the folder of train/ and val/"
            ]
        base = FASHION_MNIST_ROOT if name == "fashion_mnist" else DEFAULT_DOWNLOAD_ROOT
    else:
        base = Path(root)
    bases = [base / f for f in folders]
    if name == "fashion_mnist" and root is None:
        bases.append(DEFAULT_DOWNLOAD_ROOT / "FashionMNIST" / "raw")
    for folder in bases:
        if all(_present(folder, n, gz=name == "fashion_mnist") for n in names):
            return _imagenet_classes(folder) if name == "imagenet" else []
    missing = [n for n in names if not _present(bases[0], n, gz=name == "fashion_mnist")]
    where = " or ".join(str(b.resolve()) for b in bases)
    return [
        f"dataset {name}: data missing: {', '.join(missing)} not in {where}; "
        f"get {how} (--data-root)"
    ]


def _present(folder: Path, name: str, gz: bool) -> bool:
    if name.endswith("/"):
        return (folder / name).is_dir()
    return (folder / name).is_file() or (gz and (folder / f"{name}.gz").is_file())


def _imagenet_classes(root: Path) -> list[str]:
    """ImageFolder needs class folders in both splits, the same ones."""
    split = {}
    for name in ("train", "val"):
        with os.scandir(root / name) as it:
            split[name] = {e.name for e in it if e.is_dir()}
    if not split["train"] or split["train"] != split["val"]:
        return [
            f"dataset imagenet: {root / 'train'} has {len(split['train'])} class folders and "
            f"{root / 'val'} {len(split['val'])}; both need the same ones"
        ]
    return []


def resource_problems(plan: Plan, cpus: int, gpus: int, where: str = "this machine") -> list[str]:
    """The largest GPU and CPU reservation of one job against ``gpus`` and ``cpus``."""
    asks = [job_resources(plan, job) for job in plan_jobs(plan)]
    need_cpus, need_gpus = max(a[0] for a in asks), max(a[1] for a in asks)
    out = []
    if need_gpus > gpus:
        have = "no GPU" if gpus == 0 else f"{gpus} GPUs"
        out.append(
            f"resources: {have} on {where}; the largest job asks for {need_gpus:g} "
            "(run on a cluster: --address)"
        )
    if need_cpus > cpus:
        out.append(f"resources: {cpus} CPUs on {where}; the largest job asks for {need_cpus:g}")
    return out


def local_problems(plan: Plan) -> list[str]:
    """What this machine lacks: the dataset's files and the GPUs and CPUs of its jobs."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    data = plan.space.dataset
    return data_problems(data.name, data.root) + resource_problems(plan, os.cpu_count() or 1, gpus)
