"""ACT and SACT baselines: ResNets that learn where to stop, with exact per-sample MACs.

Figurnov et al., "Spatially Adaptive Computation Time for Residual Networks" (CVPR 2017).
Each stage ("block" in the paper: the residual units at one resolution) is one ACT loop.
After unit ``l`` a halting branch gives a score ``h_l`` in [0, 1]; the last unit's score is
fixed to 1, so every loop ends. With ``N`` the first unit at which the cumulative score
reaches ``1 - eps`` and the remainder ``R = 1 - sum_{l<N} h_l``:

- the stage's output is ``sum_{l<N} h_l x_l + R x_N`` (``x_l`` is unit ``l``'s output; the
  first unit changes the resolution, so every ``x_l`` has the stage's shape);
- its ponder cost is ``N + R`` (``N`` is piecewise constant, so the gradient reaches the
  halting branches through ``R``); the network's ponder cost is the sum over stages and the
  loss is ``CE + tau * ponder`` (``skipnet_sweep.stages.ponder``).

``act`` (§3.1) halts per sample: global average pool, linear, sigmoid. ``sact`` (§3.2) halts
per spatial position: a 3x3 convolution of the unit's output plus a linear term of its global
average pool (broadcast), sigmoid. A position that has halted keeps its features frozen for
the rest of the stage (later units still read them as neighbours of active positions), and
the ponder cost is the per-position ``N + R`` map averaged over positions.

Two ways to run:

- ``masked``: every unit runs on the whole batch and halted samples/positions keep their
  previous features (``torch.where``). Training uses it; ``count_halting_costs`` reads the
  shapes from it.
- ``sparse``: a unit runs only on the samples with at least one position still active
  (gather, run, scatter). For ACT this is exactly the samples still running, so it really
  stops computing for halted samples. SACT still computes a running sample at every
  position (there is no perforated convolution here); its MACs are counted at the active
  positions only (see ``HaltingCostTable``). In eval mode both paths give the same outputs.

Halting branches start with a bias of -3 (``sigmoid(-3) ~ 0.05``), so a fresh network uses
nearly every unit and the backbone's pretrained behaviour is kept at the start of training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from skipnet_sweep.models.costs import MacTable, trace_macs
from skipnet_sweep.models.gates import check_gate_mode
from skipnet_sweep.models.resnet import EXEC_PATHS, SkipOutput, SkipResNet, run_block

HALTING_KINDS = ("act", "sact")


def check_halting_kind(kind: str) -> str:
    """Return ``kind`` if it is ``act`` or ``sact``, else raise a one-line ``ValueError``."""
    if kind not in HALTING_KINDS:
        raise ValueError(f"unknown halting kind {kind!r}; allowed: {', '.join(HALTING_KINDS)}")
    return kind


# --------------------------------------------------------------------------- arithmetic


class HaltStep(NamedTuple):
    """One unit of an ACT loop, per sample (ACT) or per position (SACT).

    Attributes:
        active: bool, the unit runs here (the cumulative score before it is below 1 - eps).
        halts: bool, the loop stops at this unit (it is unit ``N``).
        weight: the unit output's weight in the loop's output: ``h`` before ``N``, ``R`` at
            ``N``, 0 after.
        cost: this unit's share of the ponder cost: ``1`` if active, plus ``R`` at ``N``.
        cum: the cumulative score including this unit (the next unit's ``prev``).
    """

    active: Tensor
    halts: Tensor
    weight: Tensor
    cost: Tensor
    cum: Tensor


def still_running(prev: Tensor, eps: float) -> Tensor:
    """Where a loop whose earlier units scored ``prev`` in total runs its next unit."""
    return prev < 1 - eps


def halting_step(h: Tensor, prev: Tensor, eps: float) -> HaltStep:
    """Advance an ACT loop by one unit.

    Args:
        h: this unit's halting score (1 for the last unit of a loop).
        prev: the sum of the earlier units' scores (0 before the first unit).
        eps: the loop halts once the cumulative score reaches ``1 - eps``.

    Returns:
        a ``HaltStep``; every tensor has the shape of ``h``.
    """
    active = still_running(prev, eps)
    cum = prev + h
    halts = active & (cum >= 1 - eps)
    zero = torch.zeros_like(h)
    remainder = torch.where(halts, 1 - prev, zero)
    weight = torch.where(halts, remainder, torch.where(active, h, zero))
    return HaltStep(active, halts, weight, active.to(h.dtype) + remainder, cum)


class Halting(NamedTuple):
    """A whole ACT loop (``halting_weights``); shapes are those of one unit's scores."""

    weights: Tensor  # (L, ...) weight of each unit's output; sums to 1 over units
    n: Tensor  # (...) long, the number of units run, N
    remainder: Tensor  # (...) R = 1 - sum_{l<N} h_l
    ponder: Tensor  # (...) N + R


def halting_weights(h: Tensor, eps: float = 0.01) -> Halting:
    """ACT on a whole loop of halting scores: the arithmetic the networks run unit by unit.

    Args:
        h: (L, ...) halting scores of the L units, per sample (ACT) or per position (SACT).
            ``h[-1]`` is ignored: the last unit always halts (its score is taken as 1).
        eps: halting threshold ``1 - eps``.

    Returns:
        a ``Halting`` with the unit weights, ``N``, ``R`` and the ponder cost ``N + R``.
    """
    h = torch.cat([h[:-1], torch.ones_like(h[-1:])])
    prev = torch.zeros_like(h[0])
    weights, n, cost = [], torch.zeros_like(h[0], dtype=torch.long), torch.zeros_like(h[0])
    for h_l in h:
        step = halting_step(h_l, prev, eps)
        weights.append(step.weight)
        n = n + step.active.long()
        cost = cost + step.cost
        prev = step.cum
    return Halting(torch.stack(weights), n, cost - n.to(cost.dtype), cost)


# --------------------------------------------------------------------------- network


class HaltingBranch(nn.Module):
    """The halting score of one residual unit from that unit's output.

    Args:
        channels: channels of the unit's output.
        spatial: False (ACT): ``sigmoid(W pool(x) + b)`` per sample. True (SACT): ``sigmoid(
            conv3x3(x) + W pool(x) + b)`` per position (the convolution has no bias).
        bias: initial ``b``.
    """

    def __init__(self, channels: int, spatial: bool, bias: float = -3.0):
        super().__init__()
        self.linear = nn.Linear(channels, 1)
        self.conv = nn.Conv2d(channels, 1, 3, 1, 1, bias=False) if spatial else None
        nn.init.constant_(self.linear.bias, bias)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) features -> (B,) scores (ACT) or (B, H, W) scores (SACT)."""
        # Scores are accumulated towards 1 - eps: keep them in float32 under autocast.
        z = self.linear(x.mean((2, 3))).squeeze(1).float()
        if self.conv is None:
            return torch.sigmoid(z)
        return torch.sigmoid(self.conv(x).squeeze(1).float() + z[:, None, None])


class HaltingResNet(nn.Module):
    """A plain ResNet in which every stage is an ACT (per sample) or SACT (per position) loop.

    The backbone's ``stem``, ``stages`` and ``fc`` are used as they are, under the same
    names, so a plain-ResNet state_dict loads with only the ``halting.*`` keys missing.
    ``halting[s][j]`` scores unit ``j`` of stage ``s``; the last unit of a stage has none.

    Args:
        backbone: a plain ``SkipResNet`` (no gates).
        kind: ``act`` or ``sact``.
        eps: a loop halts once its cumulative score reaches ``1 - eps``.
        halting_bias: initial bias of every halting branch.
    """

    def __init__(
        self, backbone: SkipResNet, kind: str, eps: float = 0.01, halting_bias: float = -3.0
    ):
        super().__init__()
        self.kind = check_halting_kind(kind)
        if backbone.gates is not None:
            raise ValueError(
                "HaltingResNet wraps a plain ResNet; build the backbone with gate=None"
            )
        if not 0 < eps < 1:
            raise ValueError(f"eps must be in (0, 1), got {eps}")
        self.eps = eps
        self.stem = backbone.stem
        self.stages = backbone.stages
        self.fc = backbone.fc
        self.halting = nn.ModuleList(
            nn.ModuleList(
                # Branch j reads unit j's output: the input width of unit j + 1.
                HaltingBranch(nxt.conv1.in_channels, kind == "sact", halting_bias)
                for nxt in list(stage)[1:]
            )
            for stage in self.stages
        )

    @property
    def blocks(self) -> list[nn.Module]:
        """All residual units in execution order."""
        return [b for stage in self.stages for b in stage]

    @property
    def num_units(self) -> int:
        """Residual units, i.e. the columns of ``executed`` and ``probs``."""
        return sum(len(s) for s in self.stages)

    def forward(
        self,
        x: Tensor,
        mode: str | None = None,
        path: str = "masked",
        force: Tensor | None = None,
    ) -> SkipOutput:
        """Run the network.

        Args:
            x: images (B, C, H, W).
            mode: a gate mode, accepted (and checked) so the training loop and evaluation
                can call every network alike; halting is deterministic in every mode.
            path: ``masked`` (every unit on the whole batch) or ``sparse`` (a unit runs only
                on the samples still running somewhere).
            force: not supported: a halting network decides for itself.

        Returns:
            a ``SkipOutput`` with ``executed`` (B, units) float: the fraction of the sample's
            positions at which each unit ran (0/1 for ACT; 1 for every stage's first unit),
            ``probs`` (B, units): the halting score where the unit ran, 0 elsewhere, averaged
            over positions for SACT (1 for a stage's last unit wherever it ran),
            ``log_probs`` None and ``ponder`` (B,): the sum over stages of ``N + R``
            (averaged over positions for SACT).
        """
        if mode is not None:
            check_gate_mode(mode)
        if path not in EXEC_PATHS:
            raise ValueError(f"unknown execution path {path!r}; allowed: {', '.join(EXEC_PATHS)}")
        if force is not None:
            raise ValueError("halting networks decide for themselves; force is not supported")
        sparse = path == "sparse"
        x = self.stem(x)
        executed, probs, ponder = [], [], None
        for units, branches in zip(self.stages, self.halting, strict=True):
            x, ex, pr, po = self._run_stage(units, branches, x, sparse)
            executed += ex
            probs += pr
            ponder = po if ponder is None else ponder + po
        logits = self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
        return SkipOutput(
            logits=logits,
            executed=torch.stack(executed, 1),
            probs=torch.stack(probs, 1),
            log_probs=None,
            ponder=ponder,
        )

    def _run_stage(
        self, units: nn.ModuleList, branches: nn.ModuleList, x: Tensor, sparse: bool
    ) -> tuple[Tensor, list[Tensor], list[Tensor], Tensor]:
        """One ACT loop: returns the stage output and, per unit, the (B,) executed fraction
        and mean halting score, and the (B,) ponder cost of the stage."""
        last = len(units) - 1
        # The first unit changes the resolution and always runs everywhere.
        x = run_block(units[0], x)
        spatial = self.kind == "sact"
        scores_shape = (x.shape[0], *x.shape[2:]) if spatial else (x.shape[0],)
        prev = x.new_zeros(scores_shape, dtype=torch.float32)
        out, cost = None, torch.zeros_like(prev)
        executed, probs = [], []
        for j, unit in enumerate(units):
            active = still_running(prev, self.eps)
            if j > 0:
                if sparse and not active.any():
                    # Everyone has halted: the rest of the stage is not computed at all.
                    zero = x.new_zeros(x.shape[0], dtype=torch.float32)
                    executed += [zero] * (len(units) - j)
                    probs += [zero] * (len(units) - j)
                    break
                x = _advance(unit, x, active, sparse)
            # The last unit of a stage always halts: its score is 1, it has no branch.
            h = _score(branches[j], x, active, sparse) if j < last else torch.ones_like(prev)
            step = halting_step(h, prev, self.eps)
            w = _expand(step.weight).to(x.dtype)
            out = w * x if out is None else torch.addcmul(out, w, x)
            cost = cost + step.cost
            prev = step.cum
            executed.append(_per_sample(step.active.to(torch.float32)))
            probs.append(_per_sample(torch.where(step.active, h, torch.zeros_like(h))))
        return out, executed, probs, _per_sample(cost)


def _expand(m: Tensor) -> Tensor:
    """(B,) or (B, H, W) -> broadcastable against (B, C, H, W)."""
    return m.view(-1, 1, 1, 1) if m.dim() == 1 else m.unsqueeze(1)


def _per_sample(m: Tensor) -> Tensor:
    """(B,) stays; (B, H, W) is averaged over positions."""
    return m if m.dim() == 1 else m.flatten(1).mean(1)


def _rows(active: Tensor) -> Tensor:
    """Samples with at least one active position."""
    return active if active.dim() == 1 else active.flatten(1).any(1)


def _advance(unit: nn.Module, x: Tensor, active: Tensor, sparse: bool) -> Tensor:
    """Run ``unit`` where ``active``; halted samples/positions keep their features."""
    if sparse:
        rows = _rows(active)
        n_run = int(rows.sum())
        if n_run < rows.numel():
            idx = rows.nonzero().squeeze(1)
            xs = x.index_select(0, idx)
            ys = torch.where(_expand(active.index_select(0, idx)), run_block(unit, xs), xs)
            return x.index_copy(0, idx, ys)
        if active.dim() == 1:
            return run_block(unit, x)  # ACT with every sample running: nothing to keep
    return torch.where(_expand(active), run_block(unit, x), x)


def _score(branch: HaltingBranch, x: Tensor, active: Tensor, sparse: bool) -> Tensor:
    """The halting score; the sparse path evaluates it for running samples only (0 for the
    others, which have halted and ignore it)."""
    if sparse:
        rows = _rows(active)
        if int(rows.sum()) < rows.numel():
            idx = rows.nonzero().squeeze(1)
            h = branch(x.index_select(0, idx))
            full = h.new_zeros((x.shape[0], *h.shape[1:]))
            return full.index_copy(0, idx, h)
    return branch(x)


# --------------------------------------------------------------------------- costs


@dataclass
class HaltingCostTable(MacTable):
    """Per-sample MACs of a halting network at one input size; the totals (``plain_total``,
    ``full_total``...) are ``MacTable``'s, as for a SkipNet's ``flops.CostTable``.

    What a sample costs (``per_sample``), counted as ``flops.py`` counts (convolution MACs
    ``out_elements * C_in/groups * kh * kw``, linear ``in * out``; BN, activations, pooling
    and the halting arithmetic are not counted):

    - the stem and the classifier, always;
    - each residual unit (its convolutions and its shortcut projection) times the fraction
      of the sample's positions at which it ran, measured at the unit's output resolution.
      ACT: 0 or 1. SACT: the active fraction, as the paper counts a unit evaluated at the
      active positions only (an exact perforated 3x3 convolution would also read the
      intermediate features at the active positions' neighbours; that is not counted);
    - each halting branch that exists (not after a stage's last unit): its 3x3 convolution
      (SACT) times the same fraction, and its linear layer once if the unit ran anywhere.

    The first unit of every stage runs everywhere. With nothing halting early the count is
    exactly what ``FlopCounterMode`` measures divided by 2, on either path.

    Attributes:
        kind: ``act`` or ``sact``.
        stem: convolution MACs of the stem.
        unit: convolution MACs of each residual unit run everywhere (shortcut included).
        halt_conv: convolution MACs of each unit's halting branch at every position (SACT).
        halt_linear: linear MACs of each unit's halting branch.
        head: linear MACs of the classifier.
    """

    kind: str
    stem: int
    unit: list[int]
    halt_conv: list[int]
    halt_linear: list[int]
    head: int

    def _parts(self) -> tuple[list[int], list[int], list[int]]:
        return self.unit, self.halt_conv, self.halt_linear

    @property
    def num_units(self) -> int:
        return len(self.unit)

    @property
    def num_gates(self) -> int:
        """Halting branches: every unit but a stage's last has one."""
        return sum(1 for lin in self.halt_linear if lin)

    def skip_savings(self) -> list[int]:
        """MACs a sample saves when unit ``i`` does not run at all (the unit and its halting
        branch). A stage's first unit always runs, so its entry is never realised."""
        return [
            u + c + lin
            for u, c, lin in zip(self.unit, self.halt_conv, self.halt_linear, strict=True)
        ]

    def per_sample(self, executed: Tensor, *, conv_only: bool = False) -> Tensor:
        """MACs of each sample from the fraction of positions at which each unit ran.

        Args:
            executed: (B, units) float in [0, 1] (bool for ACT is fine): ``out.executed``.
            conv_only: count convolutions only (the paper's figure).

        Returns:
            (B,) float64 MACs.
        """
        if executed.dim() != 2 or executed.shape[1] != self.num_units:
            raise ValueError(
                f"executed must have shape (B, {self.num_units}), got {tuple(executed.shape)}"
            )
        e = executed.to(torch.float64)
        conv = torch.tensor(self.unit, dtype=torch.float64) + torch.tensor(
            self.halt_conv, dtype=torch.float64
        )
        macs = self.stem + e @ conv
        if conv_only:
            return macs
        linear = torch.tensor(self.halt_linear, dtype=torch.float64)
        return macs + self.head + (e > 0).to(torch.float64) @ linear

    def to_dict(self) -> dict:
        return self._to_dict(lead={"kind": self.kind})


def count_halting_costs(
    model: HaltingResNet, input_shape: tuple[int, int, int]
) -> HaltingCostTable:
    """Measure the per-sample cost table of ``model`` at ``input_shape`` (C, H, W).

    Runs one sample through the masked path, which evaluates every unit and every halting
    branch whatever the scores say, and reads each layer's output shape with forward hooks;
    each call is attributed to the stem, a unit, a halting branch or the classifier by the
    layer's name.
    """
    events = trace_macs(model, input_shape, lambda model, x: model(x, path="masked"))
    offsets = [0]
    for stage in model.stages:
        offsets.append(offsets[-1] + len(stage))
    n = offsets[-1]
    stem = head = 0
    unit, halt_conv, halt_linear = [0] * n, [0] * n, [0] * n
    for name, _is_conv, macs in events:
        parts = name.split(".")
        if parts[0] == "stem":
            stem += macs
        elif parts[0] == "fc":
            head += macs
        else:
            i = offsets[int(parts[1])] + int(parts[2])
            if parts[0] == "stages":
                unit[i] += macs
            elif parts[3] == "conv":
                halt_conv[i] += macs
            else:
                halt_linear[i] += macs
    return HaltingCostTable(model.kind, stem, unit, halt_conv, halt_linear, head)
