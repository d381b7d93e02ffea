"""Gating modules of SkipNet (paper §3.1, Fig. 3) and the ways a gate turns a probability
into a decision.

A gate reads the output of block ``i - 1`` and gives, per sample, the probability ``p`` that
block ``i`` is executed. *How* ``p`` becomes a decision is the gate *mode*, shared by every
design (one implementation per idea, not a class per mode):

- ``hard``: straight-through (Eq. 9). Forward ``1[p >= 0.5]``, backward through ``p``. SP.
- ``sample``: ``g ~ Bernoulli(p)``, with ``log P(g)`` returned for REINFORCE. HRL.
- ``threshold``: ``1[p >= 0.5]``, no gradient. Inference.
- ``soft``: ``g = p``, continuous mixing (the Table 3 ablation; inference then thresholds).
- ``gumbel``: straight-through Gumbel-softmax over {skip, execute} (ConvNet-AIG): forward
  ``1[logit + noise >= 0]`` with logistic noise (the difference of two Gumbels), backward
  through ``sigmoid(logit + noise)``.

Gate designs are a registry (``register_gate``): a design is a builder from the gated
blocks' input widths to either one module per block (called as ``gate(x) -> logit``) or one
recurrent module shared by all blocks (``gate(x, state, index) -> (logit, state)``). A
method that brings its own gate (ConvNet-AIG) registers it; the executor never names one.

Gates hold no state between calls: the recurrent gate's LSTM state is passed in and
returned by the caller (the network's forward), so two forward passes never interfere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

GATE_MODES = ("hard", "sample", "threshold", "soft", "gumbel")
# The SkipNet paper's designs (Fig. 3); ``list_gates()`` has every registered one.
GATE_DESIGNS = ("ff1", "ff2", "rnn")


def check_gate_mode(mode: str) -> str:
    """Return ``mode`` if it is a known gate mode, else raise a one-line ``ValueError``."""
    if mode not in GATE_MODES:
        raise ValueError(f"unknown gate mode {mode!r}; allowed: {', '.join(GATE_MODES)}")
    return mode


@dataclass
class Decision:
    """What one gate decided for a batch.

    Attributes:
        gate: the value that multiplies the block output (Eq. 1), shape (B,). Carries the
            straight-through gradient in ``hard`` mode and ``p`` itself in ``soft`` mode.
        executed: boolean execute/skip decision per sample, shape (B,), no gradient.
        prob: the gate's execute probability ``p``, shape (B,), with gradient.
        log_prob: ``log P(executed)`` under Bernoulli(p), shape (B,); only in ``sample`` mode.
    """

    gate: Tensor
    executed: Tensor
    prob: Tensor
    log_prob: Tensor | None = None


def decide(logit: Tensor, mode: str) -> Decision:
    """Turn a gate logit (B,) into a decision according to ``mode``.

    The logit is cast to at least float32 first: under bf16/fp16 autocast the gate's layers
    run in low precision, but its probability, decision and log-probability (which
    REINFORCE multiplies by returns) are float32 (float64 models stay float64).
    """
    logit = logit.to(torch.promote_types(logit.dtype, torch.float32))
    prob = torch.sigmoid(logit)
    if mode == "hard":
        hard = (prob >= 0.5).to(prob.dtype)
        # Ordered so the forward value is exactly 0 or 1 in floating point.
        return Decision(gate=hard - prob.detach() + prob, executed=hard.bool(), prob=prob)
    if mode == "threshold":
        hard = (prob >= 0.5).to(prob.dtype)
        return Decision(gate=hard, executed=hard.bool(), prob=prob)
    if mode == "sample":
        with torch.no_grad():
            # Diverged weights give NaN probabilities, on which Bernoulli fails (a device-side
            # assert on CUDA, which kills the process). Sample from a finite stand-in instead
            # of checking on the host every gate: the NaN still reaches log_prob and the loss,
            # where the training loop's periodic check reports it.
            action = torch.bernoulli(torch.nan_to_num(prob, nan=0.5))
        # log P(action) from the logit directly: numerically safe when p saturates.
        log_prob = -F.binary_cross_entropy_with_logits(logit, action, reduction="none")
        return Decision(gate=action, executed=action.bool(), prob=prob, log_prob=log_prob)
    if mode == "soft":
        return Decision(gate=prob, executed=prob >= 0.5, prob=prob)
    if mode == "gumbel":
        # Gumbel-softmax over two classes is a sigmoid of the logit difference plus the
        # difference of two Gumbel draws, which is logistic: log(u) - log(1 - u).
        with torch.no_grad():
            u = torch.rand_like(logit).clamp_(1e-6, 1 - 1e-6)
            noise = torch.log(u) - torch.log1p(-u)
        soft = torch.sigmoid(logit + noise)
        hard = (soft >= 0.5).to(soft.dtype)
        return Decision(gate=hard - soft.detach() + soft, executed=hard.bool(), prob=prob)
    check_gate_mode(mode)
    raise AssertionError("unreachable")


def global_pool(x: Tensor) -> Tensor:
    """Global average pool (B, C, H, W) -> (B, C) as a sum over positions, divided after.

    The same value as ``x.mean((2, 3))``; its backward is an expanded view of the (B, C)
    gradient instead of a full-size tensor that ``mean``'s backward materialises (one
    memory pass per gate per training step). The in-place ReLUs before it are safe: batch
    norm's backward does not read its output.
    """
    return x.sum((2, 3)).div_(x.shape[2] * x.shape[3])


class FFGateI(nn.Module):
    """FFGate-I (Fig. 3a): 2x2 max-pool, 3x3 conv s1 + BN + ReLU, 3x3 conv s2 + BN + ReLU,
    global average pool, linear to one logit. About 19% of a CIFAR basic block."""

    BN_FOLDS = (("conv1", "bn1"), ("conv2", "bn2"))  # see ``resnet.folded``

    def __init__(self, channels: int):
        super().__init__()
        # ceil_mode keeps 1x1 maps (tiny inputs, last ImageNet stage at low resolution) valid.
        self.pool = nn.MaxPool2d(2, ceil_mode=True)
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(self.pool(x))), inplace=True)
        x = F.relu(self.bn2(self.conv2(x)), inplace=True)
        return self.fc(global_pool(x)).squeeze(1)


class FFGateII(nn.Module):
    """FFGate-II (Fig. 3b): one 3x3 conv s2 + BN + ReLU, global average pool, linear.
    About 12.5% of a basic block; the paper's choice for networks deeper than 100 layers."""

    BN_FOLDS = (("conv", "bn"),)

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn(self.conv(x)), inplace=True)
        return self.fc(global_pool(x)).squeeze(1)


RNN_PROJECTIONS = ("per_block", "shared")


class RNNGate(nn.Module):
    """RNNGate (Fig. 3c): global average pool, linear projection to ``embed_dim``, a single
    LSTM cell shared by all gates of the network, linear to one logit.

    Args:
        widths: channel count of each gate's input, one entry per gated block.
        embed_dim, hidden_dim: LSTM input and state sizes (10 and 10 in the paper).
        projections: ``per_block`` gives every gate its own input projection, as the
            official code does (one ``AvgPool2d`` + 1x1 ``Conv2d`` to ``embed_dim`` per block,
            ``gate_layer`` in ucbdrive/skipnet cifar/models.py L689-694 and imagenet/models.py
            L591-596: 53 for ResNet-110); ``shared`` uses one projection per feature width
            (3 for a CIFAR ResNet), which is smaller but lets blocks of a stage interfere.

    ``forward`` takes and returns the LSTM state so the module itself stays stateless.
    """

    def __init__(
        self,
        widths: list[int],
        embed_dim: int = 10,
        hidden_dim: int = 10,
        projections: str = "per_block",
    ):
        super().__init__()
        if projections not in RNN_PROJECTIONS:
            raise ValueError(
                f"unknown projections {projections!r}; allowed: {', '.join(RNN_PROJECTIONS)}"
            )
        self.projections = projections
        proj_widths = list(widths) if projections == "per_block" else sorted(set(widths))
        # Which projection gate i reads through.
        self.proj_index = (
            list(range(len(widths)))
            if projections == "per_block"
            else [proj_widths.index(w) for w in widths]
        )
        self.proj = nn.ModuleList(nn.Linear(w, embed_dim) for w in proj_widths)
        self.lstm = nn.LSTMCell(embed_dim, hidden_dim)
        self.fc = nn.Linear(hidden_dim, 1)
        self.hidden_dim = hidden_dim

    def _projection(self, x: Tensor, index: int | None) -> nn.Linear:
        if index is not None:
            return self.proj[self.proj_index[index]]
        # No gate index (costing one gate in isolation): the first projection of this width.
        return next(p for p in self.proj if p.in_features == x.shape[1])

    def forward(
        self, x: Tensor, state: tuple[Tensor, Tensor] | None, index: int | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Args: x (B, C, H, W), state from the previous gate or None at the first gate,
        index of the gate (selects its projection).
        Returns: the logit (B,) and the new LSTM state."""
        embed = self._projection(x, index)(global_pool(x))
        if state is None:
            # Explicit zeros (rather than None) keep the hidden matmul in every step, so the
            # per-gate cost is the same at every depth and the FLOP count stays simple.
            zeros = embed.new_zeros(x.shape[0], self.hidden_dim)
            state = (zeros, zeros)
        h, c = self.lstm(embed, state)
        return self.fc(h).squeeze(1), (h, c)

    def pooled_step(
        self,
        pooled: Tensor,
        state: tuple[Tensor, Tensor] | None,
        index: int,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """``forward`` on the already pooled input (B, C), for inference: the same operations
        on the same parameters without the module calls. Per-call overhead, not arithmetic,
        is what a gate costs at small batch (docs/benchmarks.md). ``forward`` stays the
        definition that FLOP counting hooks."""
        proj = self.proj[self.proj_index[index]]
        lstm, fc = self.lstm, self.fc
        if state is None:
            zeros = pooled.new_zeros(pooled.shape[0], self.hidden_dim)
            state = (zeros, zeros)
        embed = F.linear(pooled, proj.weight, proj.bias)
        h, c = torch.lstm_cell(
            embed, state, lstm.weight_ih, lstm.weight_hh, lstm.bias_ih, lstm.bias_hh
        )
        return F.linear(h, fc.weight, fc.bias).squeeze(1), (h, c)


def gate_heads(gates: nn.Module) -> list[nn.Linear]:
    """The layer that outputs each gate's logit (one, shared, for a recurrent gate): every
    design names it ``fc``."""
    if isinstance(gates, nn.ModuleList):
        return [g.fc for g in gates]
    return [gates.fc]


@torch.no_grad()
def sharpen_gates(gates: nn.Module, factor: float) -> None:
    """Multiply every gate logit by ``factor`` by scaling the output layer's weight and bias.

    The official HRL stage on ImageNet calls ``model.module.control.hotter(args.temp)`` with
    ``temp = 0.05`` before training (ucbdrive/skipnet imagenet/train_rl.py L83, L133-135),
    and ``hotter(t)`` divides the weight and bias of the recurrent gate's hidden-to-logit
    projection by ``t`` (imagenet/models.py L473-475): every logit times 20, so the SP
    policy's probabilities move towards 0 and 1 and REINFORCE starts from a near-greedy
    policy. The CIFAR HRL script does not (cifar/train_rl.py has no ``hotter`` call).
    """
    if factor <= 0:
        raise ValueError(f"gate sharpening factor must be > 0, got {factor}")
    for head in gate_heads(gates):
        head.weight.mul_(factor)
        if head.bias is not None:
            head.bias.mul_(factor)


@dataclass(frozen=True)
class GateDesign:
    """A registered gate design.

    Attributes:
        name: the checked string a config names it by (``ModelConfig.gate``).
        build: ``build(widths, **options) -> nn.Module``; ``widths`` is the input channel
            count of each gated block.
        recurrent: one module shared by every gated block, called ``gate(x, state, index)
            -> (logit, state)``; otherwise an ``nn.ModuleList`` of per-block ``gate(x) ->
            logit`` modules.
        label: the name figures print (``FFGate-I``).
        he_init: the network re-draws the design's linear layers with He fan-out after
            building it (SkipNet's designs, as the official code initialises them); False
            keeps the design's own init (ConvNet-AIG's gates start 87 % open).
    """

    name: str
    build: Callable[..., nn.Module]
    recurrent: bool = False
    label: str = ""
    he_init: bool = False


_GATES: dict[str, GateDesign] = {}


def register_gate(
    name: str,
    *,
    recurrent: bool = False,
    label: str = "",
    he_init: bool = False,
    replace: bool = False,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a gate design's builder under ``name`` (a decorator).

    Raises:
        ValueError: ``name`` is taken (unless ``replace``) or names a network kind.
    """

    def deco(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _GATES and not replace and _GATES[name].build is not build:
            raise ValueError(f"a gate design named {name!r} is already registered")
        _GATES[name] = GateDesign(name, build, recurrent, label or name, he_init)
        return build

    return deco


def list_gates() -> tuple[str, ...]:
    """Names of the registered gate designs, in registration order."""
    return tuple(_GATES)


def get_gate_design(name: str) -> GateDesign:
    """The registered design ``name``; a one-line ``ValueError`` listing them otherwise."""
    try:
        return _GATES[name]
    except KeyError:
        raise ValueError(f"unknown gate {name!r}; allowed: {', '.join(_GATES)}") from None


def per_block(design: Callable[[int], nn.Module]) -> Callable[[list[int]], nn.Module]:
    """The builder of a design with one gate per block, ``design(width)``."""
    return lambda widths: nn.ModuleList(design(w) for w in widths)


register_gate("ff1", label="FFGate-I", he_init=True)(per_block(FFGateI))
register_gate("ff2", label="FFGate-II", he_init=True)(per_block(FFGateII))
register_gate("rnn", recurrent=True, label="RNNGate", he_init=True)(
    lambda widths, rnn_projections="per_block": RNNGate(widths, projections=rnn_projections)
)


def build_gates(design: str, widths: list[int], rnn_projections: str = "per_block") -> nn.Module:
    """Build the gates of a network whose gated blocks read features of ``widths`` channels.

    Args:
        design: a registered gate design (``list_gates()``).
        widths: channel count of each gate's input, one entry per gated block.
        rnn_projections: the recurrent gate's input projections, ``per_block`` (official)
            or ``shared`` per feature width; other designs accept only ``per_block``.

    Returns:
        the design's module: per-block gates in an ``nn.ModuleList``, or one recurrent gate.
    """
    spec = get_gate_design(design)
    if spec.recurrent:
        return spec.build(widths, rnn_projections=rnn_projections)
    if rnn_projections != "per_block":
        raise ValueError(
            f"rnn_projections {rnn_projections!r} applies to the rnn gate only; "
            f"{design} gates are one per block (per_block)"
        )
    return spec.build(widths)
