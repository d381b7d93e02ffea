"""How every figure looks and names things, in one place: one colour and marker per method,
the matplotlib settings, MACs units, printed names of datasets, backbones, gates and
variants, and the titles that say what a figure shows.

A method is a run's ``method`` tag (``metrics.TAG_METHOD``). Its :class:`MethodStyle` is the
same in every figure (a comparison of studies keeps the marker and colours by study,
:func:`series_style`). Methods this module does not know (a method plugin) are named and
marked as their runs were tagged by the sweep (the registered method's ``label`` and
``marker``, ``metrics.TAG_METHOD_LABEL`` / ``TAG_METHOD_MARKER``), in a stable colour
derived from the name, from a palette kept apart from the known methods' colours; without
those tags the label is the name and the marker derived too. A plugin that wants its own
colour calls :func:`register_method_style`, which wins over the tags.

Nothing here draws or imports pyplot; matplotlib is imported only to check a colour or a marker.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from skipnet_sweep import metrics as M
from skipnet_sweep.reporting.baselines import parse_resnet

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DATASET_LABELS",
    "FLOPS_UNITS",
    "GATE_LABELS",
    "KIND_COLOURS",
    "RC",
    "VARIANT_LABELS",
    "MethodStyle",
    "backbone_label",
    "backbone_order",
    "check_unit",
    "class_names",
    "dataset_label",
    "depth_of",
    "describe_run",
    "fmt_number",
    "fmt_param",
    "macs_label",
    "top1_label",
    "method_style",
    "point_label",
    "register_method_style",
    "registered_method_styles",
    "series_style",
    "skipnet_label",
    "title",
    "unit_prefix",
]


@dataclass(frozen=True)
class MethodStyle:
    """How one method is drawn and named in every figure and table.

    Attributes:
        label: the printed name (``SkipNet, RNNGate``).
        color: a matplotlib colour (hex string).
        marker: a matplotlib marker (``o``, ``D``, ...).
    """

    label: str
    color: str
    marker: str


# Colours from Okabe & Ito (2008), "Color Universal Design" (distinguishable under the
# common forms of colour blindness) for the methods the platform trains, then Paul Tol's
# "muted" scheme for published-only methods. Each known method owns its colour.
_BUILTIN: dict[str, MethodStyle] = {
    "plain": MethodStyle("ResNet (no gates)", "#000000", "s"),
    "skipnet-ff1": MethodStyle("SkipNet, FFGate-I", "#56B4E9", "o"),
    "skipnet-ff2": MethodStyle("SkipNet, FFGate-II", "#009E73", "^"),
    "skipnet-rnn": MethodStyle("SkipNet, RNNGate", "#0072B2", "D"),
    "act": MethodStyle("ACT", "#E69F00", "v"),
    "sact": MethodStyle("SACT", "#D55E00", "P"),
    "blockdrop": MethodStyle("BlockDrop", "#CC79A7", "X"),
    "convnet-aig": MethodStyle("ConvNet-AIG", "#882255", "h"),
    "dynconv": MethodStyle("DynConv", "#999933", "*"),
}
# For methods nobody registered: colours none of the known methods use (Tol's indigo,
# green, rose, purple, sand, and a brown), markers none of them use. 6 x 6 combinations.
_SPARE_COLOURS = ("#332288", "#117733", "#CC6677", "#AA4499", "#DDCC77", "#661100")
_SPARE_MARKERS = ("<", ">", "p", "d", "H", "8")
_registry: dict[str, MethodStyle] = dict(_BUILTIN)

# Categories that are not methods (the easy/hard images of Fig. 10/11b) are drawn in greys,
# so no method colour is ever read as something else.
KIND_COLOURS = {"easy": "0.15", "hard": "0.62"}
# The sweeps or experiments of a comparison (analysis/plot_pareto.py): colour says which one
# there, so the methods keep their markers but not their colours. Paul Tol's "bright"
# scheme, then line styles, so a grey print still tells the frontiers apart.
_SERIES_COLOURS = ("#4477AA", "#EE6677", "#228833", "#CCBB44", "#66CCEE", "#AA3377", "#BBBBBB")
_SERIES_LINES = ("-", "--", "-.", ":")


def series_style(index: int) -> tuple[str, str]:
    """The colour and frontier line style of the ``index``-th series of a comparison (the
    first 28 pairs differ: 7 colours and 4 styles are coprime)."""
    return _SERIES_COLOURS[index % len(_SERIES_COLOURS)], _SERIES_LINES[index % len(_SERIES_LINES)]


def _derived(method: str) -> MethodStyle:
    # sha256, not hash(): str hashes change from one interpreter to the next.
    h = int.from_bytes(hashlib.sha256(method.encode()).digest()[:8], "big")
    colour = _SPARE_COLOURS[h % len(_SPARE_COLOURS)]
    marker = _SPARE_MARKERS[(h // len(_SPARE_COLOURS)) % len(_SPARE_MARKERS)]
    return MethodStyle(method, colour, marker)


def method_style(method: str, runs: Any = None) -> MethodStyle:
    """The style of ``method`` (a run's ``method`` tag or a baseline CSV's ``method``).

    Args:
        method: the method.
        runs: the runs being drawn (a DataFrame from ``load_runs``, or one run's row): for a
            method with no registered style, the label and marker its runs were tagged with.

    Returns:
        The registered style; for an unregistered name, the tagged label and marker (else
        the name and a derived marker), in a colour derived from the name alone (the same
        in every process) that no known method uses.
    """
    style = _registry.get(method)
    if style is not None:
        return style
    derived = _derived(str(method))
    label, marker = _tagged(method, runs)
    return MethodStyle(label or derived.label, derived.color, marker or derived.marker)


def _tagged(method: str, runs: Any) -> tuple[str | None, str | None]:
    """The label and marker ``runs`` of ``method`` were tagged with; None for each that is
    absent (runs from before the tags, a CSV) or, for a marker, not a matplotlib marker."""
    if runs is None:
        return None, None
    if hasattr(runs, "columns"):  # a DataFrame: the rows of this method
        if M.TAG_METHOD not in runs.columns:
            return None, None
        rows = [r for _, r in runs[runs[M.TAG_METHOD] == method].iterrows()]
    else:
        rows = [runs] if runs.get(M.TAG_METHOD, method) == method else []
    label, marker = (
        next((r.get(tag) for r in rows if _text(r.get(tag))), None)
        for tag in (M.TAG_METHOD_LABEL, M.TAG_METHOD_MARKER)
    )
    if marker is not None:
        from matplotlib.markers import MarkerStyle

        try:
            MarkerStyle(marker)
        except ValueError:
            marker = None
    return label, marker


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def registered_method_styles() -> dict[str, MethodStyle]:
    """Every registered method and its style (a copy)."""
    return dict(_registry)


def register_method_style(
    method: str,
    label: str,
    *,
    color: str | None = None,
    marker: str | None = None,
    replace: bool = False,
) -> MethodStyle:
    """Give a method (e.g. from a method plugin) its label, and optionally colour and marker.

    Args:
        method: the run's ``method`` tag.
        label: its printed name.
        color: a matplotlib colour no other registered method uses; default the derived one.
        marker: a matplotlib marker; default the derived one.
        replace: allow changing an existing registration (registering the same style
            again is always allowed, so a plugin module may be imported twice).

    Returns:
        The registered style.

    Raises:
        ValueError: an empty name or label, a colour or marker matplotlib does not know, a
            colour another method owns, or a different style for a registered method
            without ``replace``.
    """
    from matplotlib.colors import is_color_like, to_hex
    from matplotlib.markers import MarkerStyle

    if not method or not label:
        raise ValueError(f"method and label must be non-empty, got {method!r}, {label!r}")
    base = _derived(method)
    color = base.color if color is None else color
    marker = base.marker if marker is None else marker
    if not is_color_like(color):
        raise ValueError(f"color={color!r} for method {method!r} is not a matplotlib colour")
    try:
        MarkerStyle(marker)
    except ValueError:
        raise ValueError(
            f"marker={marker!r} for method {method!r} is not a matplotlib marker"
        ) from None
    style = MethodStyle(label, to_hex(color).upper(), marker)
    old = _registry.get(method)
    if old is not None and old != style and not replace:
        raise ValueError(
            f"method {method!r} already has style {old}; pass replace=True to change it"
        )
    owner = next(
        (m for m, s in _registry.items() if m != method and s.color.upper() == style.color),
        None,
    )
    if owner is not None:
        raise ValueError(
            f"color={color!r} for method {method!r} is already method {owner!r}'s; "
            "one colour per method"
        )
    _registry[method] = style
    return style


def _unregister(method: str) -> None:
    """Drop a registration, restoring a built-in style (for tests)."""
    _registry.pop(method, None)
    if method in _BUILTIN:
        _registry[method] = _BUILTIN[method]


# --------------------------------------------------------------------------- settings

RC: dict[str, Any] = {
    "font.size": 9,
    "axes.titlesize": 9.5,
    "axes.labelsize": 9.5,
    "legend.fontsize": 8,
    "xtick.labelsize": 8.5,
    "ytick.labelsize": 8.5,
    "axes.grid": True,
    "grid.alpha": 0.35,
    "grid.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
    "pdf.fonttype": 42,  # embed TrueType: editable text in the PDF
    "ps.fonttype": 42,
    "savefig.dpi": 200,
}

# name -> (divisor, axis suffix)
FLOPS_UNITS = {
    "raw": (1.0, ""),
    "K": (1e3, " (thousands)"),
    "M": (1e6, " (millions)"),
    "G": (1e9, " (billions)"),
}
_UNIT_PREFIX = {"raw": "", "K": "K ", "M": "M ", "G": "G "}


def check_unit(flops_unit: str) -> tuple[float, str]:
    """``(divisor, axis-label suffix)`` of a MACs unit; ValueError on an unknown one."""
    if flops_unit not in FLOPS_UNITS:
        raise ValueError(f"flops_unit must be one of {', '.join(FLOPS_UNITS)}, got {flops_unit!r}")
    return FLOPS_UNITS[flops_unit]


def unit_prefix(flops_unit: str) -> str:
    """``M`` -> ``"M "`` (as in "30 M MACs")."""
    check_unit(flops_unit)
    return _UNIT_PREFIX[flops_unit]


def macs_label(flops_unit: str, what: str = "Mean MACs per image") -> str:
    """An axis label for MACs in ``flops_unit``."""
    return what + check_unit(flops_unit)[1]


def top1_label(runs: pd.DataFrame) -> str:
    """An axis label for ``top1`` that names the images it was measured on: the validation
    split, the test set (runs without a split), or both when the runs drawn differ."""
    sets = set(runs[M.SELECTION_SET].dropna()) if M.SELECTION_SET in runs else set()
    if sets == {M.SELECTION_VAL}:
        return "Validation top-1 accuracy (%)"
    if sets <= {M.SELECTION_TEST}:
        return "Test top-1 accuracy (%)"
    return "Top-1 accuracy (%): validation split, or test set for runs without one"


# --------------------------------------------------------------------------- names

GATE_LABELS = {"ff1": "FFGate-I", "ff2": "FFGate-II", "rnn": "RNNGate", "none": "no gate"}
VARIANT_LABELS = {
    "baseline": "plain",
    "sp": "SP",
    "soft": "soft",
    "hrl+sp": "HRL+SP",
    "hrl+s": "HRL+S",
    "rl": "RL",
    "act": "ACT",
    "sact": "SACT",
}
DATASET_LABELS = {
    "cifar10": "CIFAR-10",
    "cifar100": "CIFAR-100",
    "svhn": "SVHN",
    "imagenet": "ImageNet",
    "fashion_mnist": "Fashion-MNIST",
    "synthetic": "synthetic",
}


def depth_of(backbone: str) -> int:
    """The depth in an architecture name (``cifar_resnet110`` -> 110; 0 when none)."""
    digits = ""
    for ch in reversed(str(backbone)):
        if not ch.isdigit():
            break
        digits = ch + digits
    return int(digits) if digits else 0


def backbone_order(backbones: Iterable[str]) -> list[str]:
    """Distinct backbones, shallowest first."""
    return sorted(set(backbones), key=lambda b: (depth_of(b), b))


def backbone_label(backbone: str) -> str:
    """``cifar_resnet110`` -> ``ResNet-110``; ``preact_resnet101`` -> ``PreAct ResNet-101``."""
    name = parse_resnet(backbone)
    if name is None:
        return str(backbone)
    return f"{'PreAct ' if name.preact else ''}ResNet-{name.depth}"


def skipnet_label(backbone: str) -> str:
    """The paper's model name: ``cifar_resnet38`` -> ``SkipNet-38``."""
    d = depth_of(backbone)
    return f"SkipNet-{d}" if d else f"SkipNet ({backbone})"


def dataset_label(dataset: str | None) -> str:
    """The printed name of a dataset (``cifar10`` -> ``CIFAR-10``)."""
    return DATASET_LABELS.get(dataset or "", dataset or "unknown dataset")


def class_names(dataset: str | None, labels: Iterable[int]) -> dict[int, str]:
    """Each label's name in the dataset registry (``data.DatasetInfo.class_names``), else
    the label number (ImageNet, synthetic data, a dataset this install does not know)."""
    # Imported here: the registry imports torch, which only figures with classes need.
    from skipnet_sweep.data import DATASETS

    info = DATASETS.get(dataset or "")
    return {int(c): info.class_name(c) if info else str(int(c)) for c in labels}


def fmt_number(value: float) -> str:
    """Whole numbers with thousands separators from 1,000 to 10^12, else 4 significant
    digits."""
    if abs(value) >= 1000 and abs(value) < 1e12:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def fmt_param(value: float) -> str:
    """An alpha or tau as printed (``0.1``, ``1e-05``)."""
    return f"{value:g}"


def _has(v: Any) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def point_label(row: Mapping[str, Any]) -> str:
    """Text next to a run's point: alpha for HRL runs, tau for ACT/SACT, the variant for SP,
    another method's cost weight by its name (``target=0.6``, ``penalty=-5``)."""
    variant = row.get(M.PARAM_VARIANT)
    alpha, tau = row.get(M.PARAM_ALPHA), row.get(M.PARAM_TAU)
    if row.get(M.TAG_STAGE) in ("act", "sact") and _has(tau):
        return f"τ={fmt_param(tau)}"
    if variant == "hrl+sp" and _has(alpha):
        return f"α={fmt_param(alpha)}"
    if variant in ("hrl+s", "rl") and _has(alpha):
        return f"{VARIANT_LABELS[variant]} α={fmt_param(alpha)}"
    if variant in ("sp", "soft"):
        return VARIANT_LABELS[variant]
    name, value = row.get(M.TAG_COST_WEIGHT), row.get(M.COST_WEIGHT_VALUE)
    if isinstance(name, str) and name not in (M.PARAM_ALPHA, M.PARAM_TAU) and _has(value):
        return f"{name}={fmt_param(value)}"
    return ""


def describe_run(row: Mapping[str, Any]) -> str:
    """One run, as a title names it: ``SkipNet, RNNGate HRL+SP α=0.1 (run 1a2b3c4d)``."""
    method = row.get(M.TAG_METHOD)
    parts = [method_style(method, row).label if method else "run"]
    variant = row.get(M.PARAM_VARIANT)
    if variant in ("sp", "soft", "hrl+sp", "hrl+s", "rl"):
        parts.append(VARIANT_LABELS[variant])
    if _has(row.get(M.PARAM_ALPHA)) and variant in ("hrl+sp", "hrl+s", "rl"):
        parts.append(f"α={fmt_param(row[M.PARAM_ALPHA])}")
    if _has(row.get(M.PARAM_TAU)) and row.get(M.TAG_STAGE) in ("act", "sact"):
        parts.append(f"τ={fmt_param(row[M.PARAM_TAU])}")
    run_id = row.get("run_id")
    return " ".join(parts) + (f" (run {str(run_id)[:8]})" if run_id else "")


def title(
    what: str,
    *,
    dataset: str | Iterable[str] | None,
    backbones: str | Iterable[str] | None,
    shown: str | None = None,
) -> str:
    """A figure title that says what it shows, on what: ``<what>`` then ``<dataset>,
    <backbones>: <shown>`` (the run, or the alpha chosen, ...).

    Args:
        what: the quantity (``Skipped blocks per class``).
        dataset: the dataset name (``cifar10``), or several.
        backbones: the backbone(s) drawn.
        shown: the run or selection shown (:func:`describe_run`), if not all runs.
    """
    if isinstance(backbones, str):
        backbones = [backbones]
    names = ", ".join(backbone_label(b) for b in backbone_order(backbones or []))
    datasets = [dataset] if dataset is None or isinstance(dataset, str) else sorted(set(dataset))
    line = " / ".join(dataset_label(d) for d in datasets) + (f", {names}" if names else "")
    return f"{what}\n{line}" + (f": {shown}" if shown else "")
