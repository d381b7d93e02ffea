"""One style per method, the same in every figure: known methods own distinct colours and
markers, unknown ones (method plugins) get a stable style away from them, a plugin can
register its own, and the figures draw runs and legend markers in those colours."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex

from skipnet_sweep import metrics as M
from skipnet_sweep.reporting import figures as F
from skipnet_sweep.reporting import style as S

KNOWN = ["plain", "skipnet-ff1", "skipnet-ff2", "skipnet-rnn", "act", "sact"]


@pytest.fixture
def toy_method() -> Iterator[str]:
    yield "toy-gate"
    S._unregister("toy-gate")


def test_known_methods_have_distinct_colours_and_markers() -> None:
    styles = S.registered_method_styles()
    assert set(KNOWN) <= set(styles)
    assert len({s.color for s in styles.values()}) == len(styles)
    assert len({s.marker for s in styles.values()}) == len(styles)
    assert S.method_style("skipnet-rnn").label == "SkipNet, RNNGate"
    assert S.method_style("plain").label == "ResNet (no gates)"


def test_unknown_method_gets_a_stable_distinct_style() -> None:
    toy = S.method_style("toy-method")
    known = S.registered_method_styles().values()
    assert toy.label == "toy-method"
    assert toy.color not in {s.color for s in known}
    assert toy.marker not in {s.marker for s in known}
    assert S.method_style("toy-method") == toy
    # The same in another interpreter (Python's own str hash would not be).
    code = (
        "from skipnet_sweep.reporting.style import method_style as m; "
        "s = m('toy-method'); print(s.color, s.marker)"
    )
    root = str(Path(__file__).resolve().parents[1])
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": root, "PYTHONHASHSEED": "123"},
    )
    assert out.stdout.split() == [toy.color, toy.marker]
    # Two plugin names chosen here land on different styles.
    assert S.method_style("blockdrop-v2") != S.method_style("toy-method")


def test_register_method_style(toy_method: str) -> None:
    style = S.register_method_style(toy_method, "Toy gate", color="#117733", marker="p")
    assert style == S.MethodStyle("Toy gate", "#117733", "p")
    assert S.method_style(toy_method) == style
    # Importing the plugin twice registers the same style again: allowed.
    assert S.register_method_style(toy_method, "Toy gate", color="#117733", marker="p") == style
    with pytest.raises(ValueError, match="already has style .*replace=True"):
        S.register_method_style(toy_method, "Toy gate 2", color="#117733", marker="p")
    changed = S.register_method_style(toy_method, "Toy 2", color="#117733", replace=True)
    assert changed.label == "Toy 2"
    # Colour and marker default to the derived ones.
    S._unregister(toy_method)
    derived = S.method_style(toy_method)
    assert S.register_method_style(toy_method, "Toy").color == derived.color


def test_register_method_style_rejects(toy_method: str) -> None:
    with pytest.raises(ValueError, match="already method 'skipnet-rnn''s; one colour per method"):
        S.register_method_style(toy_method, "Toy", color="#0072b2")
    with pytest.raises(ValueError, match="color='notacolour' .* is not a matplotlib colour"):
        S.register_method_style(toy_method, "Toy", color="notacolour")
    with pytest.raises(ValueError, match="marker='@@' .* is not a matplotlib marker"):
        S.register_method_style(toy_method, "Toy", marker="@@")
    with pytest.raises(ValueError, match="non-empty"):
        S.register_method_style(toy_method, "")
    assert toy_method not in S.registered_method_styles()


def test_title_names_dataset_backbone_and_run() -> None:
    row = {
        "run_id": "0123456789abcdef",
        M.TAG_METHOD: "skipnet-rnn",
        M.TAG_STAGE: "hrl",
        M.PARAM_VARIANT: "hrl+sp",
        M.PARAM_ALPHA: 0.1,
        M.PARAM_TAU: float("nan"),
    }
    assert S.describe_run(row) == "SkipNet, RNNGate HRL+SP α=0.1 (run 01234567)"
    text = S.title("What", dataset="cifar10", backbones="cifar_resnet38", shown="x")
    assert text == "What\nCIFAR-10, ResNet-38: x"
    act = {**row, M.TAG_METHOD: "act", M.TAG_STAGE: "act", M.PARAM_VARIANT: "act",
           M.PARAM_TAU: 0.01}  # fmt: skip
    assert S.describe_run(act) == "ACT τ=0.01 (run 01234567)"


# --------------------------------------------------------------------------- in figures


def _runs(rows: list[tuple[str, str, str, str, float, float, float]]) -> pd.DataFrame:
    """(name, stage, gate, variant, alpha, top1, macs) -> a load_runs-like frame."""
    out = []
    for name, stage, gate, variant, alpha, top1, macs in rows:
        out.append(
            {
                "run_id": f"{name:0<16}",
                "run_name": name,
                M.TAG_STAGE: stage,
                M.TAG_METHOD: M.method_of(stage, gate),
                M.PARAM_DATASET: "cifar10",
                M.PARAM_ARCH: "cifar_resnet38",
                M.PARAM_GATE: gate,
                M.PARAM_VARIANT: variant,
                M.PARAM_ALPHA: alpha,
                M.PARAM_TAU: 0.01 if stage in ("act", "sact") else np.nan,
                "status": "FINISHED",
                M.TOP1: top1,
                M.FLOPS_MEAN: macs,
                M.FLOPS_PLAIN: 100e6,
            }
        )
    return pd.DataFrame(out)


RUNS = _runs(
    [
        ("plain", "baseline", "none", "baseline", np.nan, 92.0, 100e6),
        ("sp-rnn", "sp", "rnn", "sp", np.nan, 92.1, 80e6),
        ("hrl-rnn", "hrl", "rnn", "hrl+sp", 0.1, 91.9, 60e6),
        ("sp-ff1", "sp", "ff1", "sp", np.nan, 92.2, 90e6),
        ("hrl-ff1", "hrl", "ff1", "hrl+sp", 0.1, 91.6, 70e6),
        ("act", "act", "none", "act", np.nan, 90.5, 50e6),
    ]
)


def _colours_at(ax, x: float, y: float) -> list[tuple[str, str]]:
    """(face, edge) hex colours of every scatter point drawn at (x, y); face '' if hollow."""
    found = []
    for coll in ax.collections:
        offsets = np.asarray(coll.get_offsets())
        for i, (px, py) in enumerate(offsets):
            if np.isclose(px, x) and np.isclose(py, y):
                faces, edges = coll.get_facecolor(), coll.get_edgecolor()
                face = to_hex(faces[i % len(faces)]) if len(faces) else ""
                edge = to_hex(edges[i % len(edges)]) if len(edges) else ""
                found.append((face, edge))
    return found


def test_pareto_draws_each_method_in_its_colour_and_rings_the_frontier(tmp_path: Path) -> None:
    data = F.pareto_figure(RUNS, tmp_path / "p")
    ax = data.figure.axes[0]
    for _, r in RUNS.iterrows():
        faces = [f for f, _ in _colours_at(ax, r[M.FLOPS_MEAN] / 1e6, r[M.TOP1])]
        assert S.method_style(r[M.TAG_METHOD]).color.lower() in faces, r.run_name
    # The ring: a hollow dark circle on each frontier point, on no other.
    front = set(data.frontier["run_name"])
    assert front == {"act", "hrl-rnn", "sp-rnn", "sp-ff1"}
    for _, r in RUNS.iterrows():
        ring = ("", "#1a1a1a") in _colours_at(ax, r[M.FLOPS_MEAN] / 1e6, r[M.TOP1])
        assert ring == (r.run_name in front), r.run_name
    # Legend markers are the methods' colours, not black.
    handles = {h.get_label(): h for h in data.figure.legends[0].legend_handles}
    for method in ("plain", "skipnet-rnn", "skipnet-ff1", "act"):
        st = S.method_style(method)
        assert to_hex(handles[st.label].get_markerfacecolor()) == st.color.lower()
        assert handles[st.label].get_marker() == st.marker
    assert any(label.startswith("Pareto frontier, HV 0.") for label in handles)


def test_same_method_colour_in_other_figures(tmp_path: Path) -> None:
    rnn = S.method_style("skipnet-rnn").color.lower()
    alpha = F.alpha_tradeoff_figure(RUNS, tmp_path / "a").figure
    lines = {line.get_label(): line for line in alpha.axes[0].get_lines()}
    assert to_hex(lines["SkipNet, RNNGate"].get_color()) == rnn
    assert lines["SkipNet, RNNGate"].get_marker() == S.method_style("skipnet-rnn").marker
    red = F.reduction_figure(RUNS, tmp_path / "r").figure
    bar_colours = {to_hex(p.get_facecolor()[:3]) for p in red.axes[0].patches}
    assert rnn in bar_colours and S.method_style("skipnet-ff1").color.lower() in bar_colours


# --------------------------------------------------------------------------- from run tags


def _tagged_runs(label: str = "Toy gating", marker: str = "p") -> pd.DataFrame:
    """RUNS plus two runs of a plugin method nobody registered a style for, tagged by the
    sweep with the method's declared label and marker."""
    toy = RUNS.iloc[[2, 2]].copy()
    toy["run_id"] = ["toy1" + "0" * 12, "toy2" + "0" * 12]
    toy["run_name"] = ["toy1", "toy2"]
    toy[M.TAG_STAGE] = "toy"
    toy[M.TAG_METHOD] = "toy-plugin"
    toy[M.TAG_METHOD_LABEL] = label
    toy[M.TAG_METHOD_MARKER] = marker
    toy[M.TOP1] = [91.0, 90.0]
    toy[M.FLOPS_MEAN] = [55e6, 45e6]
    return pd.concat([RUNS, toy], ignore_index=True)


def test_unregistered_method_takes_its_runs_tags() -> None:
    runs = _tagged_runs()
    style = S.method_style("toy-plugin", runs)
    derived = S.method_style("toy-plugin")
    assert (style.label, style.marker) == ("Toy gating", "p")
    assert derived.label == "toy-plugin" and derived.marker != "p"
    assert style.color == derived.color  # the colour stays derived from the name
    # One run's row works as well; a row of another method lends nothing.
    row = runs.iloc[-1]
    assert S.method_style("toy-plugin", row) == style
    assert S.method_style("other-plugin", row) == S.method_style("other-plugin")
    assert S.describe_run(row).startswith("Toy gating ")
    # A marker matplotlib does not know is ignored, not drawn.
    bad = S.method_style("toy-plugin", _tagged_runs(marker="not-a-marker"))
    assert (bad.label, bad.marker) == ("Toy gating", derived.marker)


def test_built_in_and_registered_styles_win_over_run_tags(toy_method: str) -> None:
    runs = _tagged_runs()
    runs.loc[runs[M.TAG_METHOD] == "skipnet-rnn", M.TAG_METHOD_LABEL] = "SkipNet"
    runs.loc[runs[M.TAG_METHOD] == "skipnet-rnn", M.TAG_METHOD_MARKER] = "o"
    assert S.method_style("skipnet-rnn", runs) == S.method_style("skipnet-rnn")
    assert S.method_style("skipnet-rnn", runs).label == "SkipNet, RNNGate"
    runs[M.TAG_METHOD] = runs[M.TAG_METHOD].replace("toy-plugin", toy_method)
    mine = S.register_method_style(toy_method, "Mine", marker="H")
    assert S.method_style(toy_method, runs) == mine


def test_plugin_label_and_marker_from_tags_reach_the_figures(tmp_path: Path) -> None:
    runs = _tagged_runs()
    colour = S.method_style("toy-plugin").color.lower()
    pareto = F.pareto_figure(runs, tmp_path / "p").figure
    handles = {h.get_label(): h for h in pareto.legends[0].legend_handles}
    assert "Toy gating" in handles and "toy-plugin" not in handles
    assert handles["Toy gating"].get_marker() == "p"
    assert to_hex(handles["Toy gating"].get_markerfacecolor()) == colour
    # The points themselves are drawn with that marker (a scatter's path is its marker's).
    from matplotlib.markers import MarkerStyle

    ax = pareto.axes[0]
    toy_points = [c for c in ax.collections if (55.0, 91.0) in map(tuple, c.get_offsets())]
    assert toy_points
    marker = MarkerStyle("p")
    want = marker.get_path().transformed(marker.get_transform()).vertices
    drawn = [c.get_paths()[0].vertices for c in toy_points if c.get_paths()]
    assert any(v.shape == want.shape and np.allclose(v, want) for v in drawn)


def test_series_of_a_comparison_differ_in_colour_or_line() -> None:
    styles = [S.series_style(i) for i in range(28)]
    assert len(set(styles)) == 28
    # Apart from the methods' colours: in a comparison colour means the study.
    method_colours = {st.color.upper() for st in S.registered_method_styles().values()}
    assert not {colour.upper() for colour, _ in styles} & method_colours


def test_a_plugin_point_is_labelled_by_its_own_cost_weight() -> None:
    from skipnet_sweep import metrics as M
    from skipnet_sweep.reporting.style import point_label

    assert point_label({M.TAG_COST_WEIGHT: "penalty", M.COST_WEIGHT_VALUE: -5.0}) == "penalty=-5"
    assert point_label({M.TAG_COST_WEIGHT: "target", M.COST_WEIGHT_VALUE: float("nan")}) == ""
