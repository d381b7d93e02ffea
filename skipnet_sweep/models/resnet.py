"""ResNets with optional SkipNet gates, and the gated executor (masked and sparse paths).

One network class serves the CIFAR-style (6n+2, three stages of 16/32/64 channels) and the
ImageNet (torchvision layout) families, gated or plain. Every residual block except the
first is gated (paper Fig. 2), by a gate that reads the previous block's output. A skipped
block passes its input through its shortcut, which is a 1x1 conv + BN projection when the
block changes shape, so Eq. 1 stays defined.

Two ways to run the same decisions:

- ``masked``: every block runs on the whole batch and the gate value mixes its output with
  the shortcut (Eq. 1). Needed for training: gradients reach every block and gate.
- ``sparse``: each block runs only on the samples whose gate says execute (gather, run,
  scatter back). This is where SkipNet saves wall time; the original code computed every
  block and masked it. In eval mode (BN uses running statistics) both paths give the same
  output.
"""

from __future__ import annotations

import copy
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from skipnet_sweep.models.gates import (
    build_gates,
    check_gate_mode,
    decide,
    gate_heads,
    get_gate_design,
    global_pool,
)

EXEC_PATHS = ("masked", "sparse")


def input_layout(model: nn.Module) -> torch.memory_format:
    """The memory layout the stages keep ``model`` and its batches in (``model_input``):
    channels-last, for faster convolutions on GPUs with tensor cores and on the CPU. Contiguous
    for a network with a strided 1x1 convolution of 2-7 input channels (toy sizes only), whose
    CPU backward in channels-last corrupts the heap in torch 2.14.1. Figures and the crash:
    docs/benchmarks.md section 4."""
    for m in model.modules():
        if (
            isinstance(m, nn.Conv2d)
            and m.kernel_size == (1, 1)
            and max(m.stride) > 1
            and 2 <= m.in_channels <= 7
        ):
            return torch.contiguous_format
    return torch.channels_last


def folded(model: nn.Module) -> nn.Module:
    """A copy of ``model`` for inference: in eval mode, each BatchNorm folded into the
    convolution it normalises (the convolution's weights scaled and a bias added; the
    BatchNorm becomes the identity). The same function to float rounding, in one pass over
    each activation instead of two (the gain: docs/benchmarks.md section 5).

    Folded: the convolution/BatchNorm neighbours of an ``nn.Sequential`` (which applies its
    modules in order) and the pairs a module's own class names in ``BN_FOLDS`` (the residual
    blocks, the feed-forward gates; a subclass is folded only if it declares its own). A
    BatchNorm of any other module, a plugin's, stays.
    """
    net = copy.deepcopy(model).eval()
    for m in list(net.modules()):
        # Exactly these classes: a subclass may apply its modules in another order (a
        # Sequential with its own forward; a block that reorders its residual) until it
        # declares its own BN_FOLDS.
        if type(m) is nn.Sequential:
            names = list(m._modules)
            pairs = tuple(zip(names, names[1:], strict=False))
        else:
            pairs = type(m).__dict__.get("BN_FOLDS", ())
        for conv_name, bn_name in pairs:
            conv, bn = m._modules[conv_name], m._modules[bn_name]
            if (
                isinstance(conv, nn.Conv2d)
                and isinstance(bn, nn.BatchNorm2d)
                and bn.running_mean is not None
                and conv.out_channels == bn.num_features
            ):
                m._modules[conv_name] = fuse_conv_bn_eval(conv, bn)
                m._modules[bn_name] = nn.Identity()
    return net.to(memory_format=input_layout(net))


def model_input(
    x: Tensor,
    device: torch.device | str,
    layout: torch.memory_format,
    non_blocking: bool = False,
) -> Tensor:
    """A batch of images on ``device`` in ``layout`` (``input_layout`` of the network)."""
    x = x.to(device, non_blocking=non_blocking)
    return x.contiguous(memory_format=layout) if x.dim() == 4 else x


class SkipOutput(NamedTuple):
    """What a forward pass returns; no state is left on the modules.

    Attributes:
        logits: (B, num_classes).
        executed: (B, G) bool, block ``i + 1`` was executed for the sample (G = gated blocks).
        probs: (B, G) gate execute probabilities, with gradient.
        log_probs: (B, G) log-probabilities of the sampled actions (``sample`` mode) else None.
        ponder: (B,) ponder cost of halting networks (ACT/SACT), else None. Their
            ``executed`` is a float fraction of positions at which each unit ran.
        gate_values: (B, G) the values that multiplied each block's output (Eq. 1), with
            the straight-through gradient where the mode has one (``hard``, ``gumbel``):
            what a loss on the execution rate differentiates (ConvNet-AIG). None without
            gates and on the lean inference path.
        extras: what a method's network returns beside these (named tensors), else None.
    """

    logits: Tensor
    executed: Tensor
    probs: Tensor
    log_probs: Tensor | None
    ponder: Tensor | None = None
    gate_values: Tensor | None = None
    extras: dict[str, Tensor] | None = None


class BasicBlock(nn.Module):
    """Two 3x3 convolutions (ResNet paper Fig. 2 left). Names follow torchvision."""

    expansion = 1
    BN_FOLDS = (("conv1", "bn1"), ("conv2", "bn2"))  # see ``folded``

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _projection(inplanes, planes, stride)

    def residual(self, x: Tensor) -> Tensor:
        return self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))


class Bottleneck(nn.Module):
    """1x1, 3x3 (strided, as torchvision "ResNet v1.5"), 1x1 convolutions, expansion 4."""

    expansion = 4
    BN_FOLDS = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = _projection(inplanes, planes * 4, stride)

    def residual(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.bn3(self.conv3(x))


def _projection(inplanes: int, outplanes: int, stride: int) -> nn.Module | None:
    if stride == 1 and inplanes == outplanes:
        return None
    return nn.Sequential(
        nn.Conv2d(inplanes, outplanes, 1, stride, bias=False), nn.BatchNorm2d(outplanes)
    )


def shortcut(block: nn.Module, x: Tensor) -> Tensor:
    """The block's shortcut: identity, or its projection when the block changes shape."""
    return x if block.downsample is None else block.downsample(x)


BLOCKS: dict[str, type[nn.Module]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


class SkipResNet(nn.Module):
    """A ResNet whose residual blocks (all but the first) may be skipped per sample.

    Args:
        block: ``basic`` or ``bottleneck``.
        depths: number of blocks per stage.
        widths: base channel count per stage (block output is ``width * expansion``).
        stem: ``cifar`` (3x3 conv) or ``imagenet`` (7x7 s2 conv + 3x3 s2 max-pool).
        num_classes: classifier outputs.
        in_channels: input image channels.
        gate: ``ff1``, ``ff2``, ``rnn``, or None for the plain ResNet.
        rnn_projections: the recurrent gate's input projections: ``per_block`` (one per
            gated block, the official code) or ``shared`` (one per feature width).
        gate_out_std: std of the normal init of each gate's logit layer; None for He
            fan-out (sqrt 2 for a one-logit layer), see ``_init_weights``.
    """

    def __init__(
        self,
        block: str,
        depths: list[int],
        widths: list[int],
        stem: str,
        num_classes: int,
        in_channels: int = 3,
        gate: str | None = None,
        rnn_projections: str = "per_block",
        gate_out_std: float | None = None,
    ):
        super().__init__()
        if gate_out_std is not None and gate_out_std <= 0:
            raise ValueError(
                f"gate_out_std must be > 0 (or None for He fan-out), got {gate_out_std}"
            )
        block_cls = BLOCKS[block]
        stem_width = widths[0] if stem == "cifar" else 64
        if stem == "cifar":
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, stem_width, 3, 1, 1, bias=False),
                nn.BatchNorm2d(stem_width),
                nn.ReLU(inplace=True),
            )
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, stem_width, 7, 2, 3, bias=False),
                nn.BatchNorm2d(stem_width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, 2, 1),
            )
        self.stages = nn.ModuleList()
        inplanes = stem_width
        for i, (depth, width) in enumerate(zip(depths, widths, strict=True)):
            stage = nn.ModuleList()
            for j in range(depth):
                stride = 2 if (i > 0 and j == 0) else 1
                stage.append(block_cls(inplanes, width, stride))
                inplanes = width * block_cls.expansion
            self.stages.append(stage)
        self.fc = nn.Linear(inplanes, num_classes)
        self.gate_design = gate
        # Gate i decides block i + 1 and reads block i's output.
        gate_widths = [b.conv1.in_channels for b in self.blocks[1:]]
        self.gates = build_gates(gate, gate_widths, rnn_projections) if gate is not None else None
        # One module for every gate, stepped with a state (the RNNGate), or one per block.
        self.recurrent_gates = gate is not None and get_gate_design(gate).recurrent
        self._init_weights(gate_out_std)

    @property
    def blocks(self) -> list[nn.Module]:
        """All residual blocks in execution order."""
        return [b for stage in self.stages for b in stage]

    @property
    def num_gates(self) -> int:
        return 0 if self.gates is None else len(self.blocks) - 1

    def _init_weights(self, gate_out_std: float | None = None) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.gates is not None:
            # He fan-out, as the official code initialises its gate outputs: the spread makes
            # decisions input-dependent from the start, where PyTorch's small default Linear
            # init leaves every logit near 0 and SP collapses. The official code's std per
            # design (CIFAR's recurrent gate: ``gate_out_std=0.447``) and the measurement:
            # docs/fidelity.md, "gate logit init".
            if get_gate_design(self.gate_design).he_init:
                for m in self.gates.modules():
                    if isinstance(m, nn.Linear):
                        nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if gate_out_std is not None:
                for head in gate_heads(self.gates):
                    nn.init.normal_(head.weight, 0.0, gate_out_std)

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
            mode: gate mode (``hard``, ``sample``, ``threshold``, ``soft``); default ``hard``
                in training mode and ``threshold`` in eval mode.
            path: ``masked`` (compute every block, mix) or ``sparse`` (compute executed
                blocks only; needs a discrete mode).
            force: optional (B, G) bool decisions that replace the gates' own; gates are
                still evaluated, so costs and probabilities stay those of the real network.

        Returns:
            a ``SkipOutput``.
        """
        mode = check_gate_mode(mode or ("hard" if self.training else "threshold"))
        if path not in EXEC_PATHS:
            raise ValueError(f"unknown execution path {path!r}; allowed: {', '.join(EXEC_PATHS)}")
        if path == "sparse" and mode == "soft":
            raise ValueError("the sparse path needs discrete decisions; soft mode is masked only")
        if force is not None and force.shape != (x.shape[0], self.num_gates):
            raise ValueError(
                f"force must have shape {(x.shape[0], self.num_gates)}, got {tuple(force.shape)}"
            )
        x = self.stem(x)
        if path == "sparse" and mode == "threshold" and self.gates is not None:
            return self._forward_lean(x, force)
        blocks = self.blocks
        x = run_block(blocks[0], x)
        executed, probs, log_probs, values = [], [], [], []
        state = None
        forced = force.to(torch.bool).unbind(1) if force is not None else None
        for i, block in enumerate(blocks[1:]):
            if self.gates is None:
                x = run_block(block, x)
                continue
            if self.recurrent_gates:
                logit, state = self.gates(x, state, i)
            else:
                logit = self.gates[i](x)
            d = decide(logit, mode)
            gate_value, run = d.gate, d.executed
            if forced is not None:
                run = forced[i]
                gate_value = run.to(x.dtype)
            executed.append(run)
            probs.append(d.prob)
            values.append(gate_value)
            if d.log_prob is not None:
                log_probs.append(d.log_prob)
            if path == "sparse":
                x, _ = _run_block_sparse(block, x, run)
            else:
                x = _run_block_masked(block, x, gate_value)
        logits = self._head(x)
        batch = logits.shape[0]
        return SkipOutput(
            logits=logits,
            executed=torch.stack(executed, 1) if executed else logits.new_zeros(batch, 0).bool(),
            probs=torch.stack(probs, 1) if probs else logits.new_zeros(batch, 0),
            log_probs=torch.stack(log_probs, 1) if log_probs else None,
            gate_values=torch.stack(values, 1) if values else None,
        )

    def run_decided(
        self,
        x: Tensor,
        executed: Tensor,
        gate_values: Tensor | None = None,
        path: str = "masked",
    ) -> Tensor:
        """The logits of the network run on decisions made elsewhere (a policy network that
        reads the image up front, BlockDrop), by the same executor as the gates' decisions.

        Args:
            x: images (B, C, H, W).
            executed: (B, nblocks - 1) bool: block ``i + 1`` runs for the sample (the first
                block always runs, as under the gates).
            gate_values: (B, nblocks - 1) values that mix each block's output with its
                shortcut on the masked path (gradients flow through them); default the
                decisions as 0/1.
            path: ``masked`` or ``sparse``.
        """
        n = len(self.blocks) - 1
        if executed.shape != (x.shape[0], n):
            raise ValueError(
                f"executed must have shape {(x.shape[0], n)}, got {tuple(executed.shape)}"
            )
        if path not in EXEC_PATHS:
            raise ValueError(f"unknown execution path {path!r}; allowed: {', '.join(EXEC_PATHS)}")
        runs = executed.to(torch.bool).unbind(1)
        x = run_block(self.blocks[0], self.stem(x))
        for i, block in enumerate(self.blocks[1:]):
            if path == "sparse":
                x, _ = _run_block_sparse(block, x, runs[i])
            else:
                g = gate_values[:, i] if gate_values is not None else runs[i].to(x.dtype)
                x = _run_block_masked(block, x, g)
        return self._head(x)

    def _head(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    def _forward_lean(self, x: Tensor, force: Tensor | None) -> SkipOutput:
        """Thresholded gates on the sparse path (inference), after the stem.

        Per-gate work is per-call overhead that FLOPs do not show (docs/benchmarks.md, "Where
        the time goes"), so this path does as few calls per gate as it can: ``sigmoid(l) >=
        0.5`` is decided as ``l >= 0`` with the probabilities computed once at the end; the
        recurrent gate steps on pooled features that are carried along (a skipped identity
        block leaves its input, and so the pooled input of the next gate, unchanged; an
        executed block's rows are pooled where they are computed).
        """
        blocks = self.blocks
        x = run_block(blocks[0], x)
        forced = force.to(torch.bool).unbind(1) if force is not None else None
        counts = force.sum(0).tolist() if force is not None and not force.is_meta else None
        # The RNNGate steps on pooled features; another recurrent design on the feature map.
        rnn = hasattr(self.gates, "pooled_step")
        pooled = global_pool(x) if rnn else None
        state = None
        gate_logits, executed = [], []
        for i, block in enumerate(blocks[1:]):
            if rnn:
                logit, state = self.gates.pooled_step(pooled, state, i)
            elif self.recurrent_gates:
                logit, state = self.gates(x, state, i)
            else:
                logit = self.gates[i](x)
            run = forced[i] if forced is not None else logit >= 0
            gate_logits.append(logit)
            executed.append(run)
            x, pooled = _run_block_sparse(
                block, x, run, counts[i] if counts is not None else None, pooled
            )
        logits = self._head(x)
        return SkipOutput(
            logits=logits,
            executed=torch.stack(executed, 1),
            probs=torch.sigmoid(torch.stack(gate_logits, 1)),
            log_probs=None,
        )


def run_block(block: nn.Module, x: Tensor) -> Tensor:
    return _add_relu(block.residual(x), shortcut(block, x))


def _add_relu(res: Tensor, sc: Tensor) -> Tensor:
    """A block's closing ``relu(res + sc)``; without autograd in place, the residual's
    output being a fresh tensor."""
    if torch.is_grad_enabled():
        return F.relu(res + sc)
    return res.add_(sc).relu_()


def _run_block_masked(block: nn.Module, x: Tensor, gate: Tensor) -> Tensor:
    """Eq. 1 on the whole batch: ``g * F(x) + (1 - g) * shortcut(x)``."""
    sc = shortcut(block, x)
    return GatedResidual.apply(block.residual(x), sc, gate)


class GatedResidual(torch.autograd.Function):
    """A block's closing add and ReLU, mixed with its shortcut by the gate (Eq. 1):
    ``out = g * relu(res + sc) + (1 - g) * sc`` with ``g`` of shape (B,).

    The same function and gradients as composing ``relu``, ``+`` and ``torch.lerp``, in fewer
    full-size passes: the mixing is memory-bound work that FLOPs do not count, about 10% of a
    block's training step (docs/benchmarks.md). Backward is three passes for the residual's
    and the shortcut's gradients (ReLU mask, times ``g``, plus ``(1 - g) grad``) where
    autograd's composition takes five; the gate's gradient
    ``sum(grad * (relu(res + sc) - sc))`` is a batched dot product, formed only when the
    gate needs one (straight-through, soft), not for sampled actions.
    """

    @staticmethod
    def forward(ctx, res: Tensor, sc: Tensor, gate: Tensor) -> Tensor:
        full = torch.add(res, sc).relu_()
        g = gate.view(-1, 1, 1, 1).to(full.dtype)
        ctx.save_for_backward(full, sc, g)
        ctx.gate_dtype = gate.dtype
        return torch.lerp(sc, full, g)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        full, sc, g = ctx.saved_tensors
        # ReLU's backward (no gradient where the output is 0), then the gate's share.
        grad_res = torch.ops.aten.threshold_backward(grad, full, 0).mul_(g)
        grad_sc = torch.addcmul(grad_res, grad, 1 - g)
        grad_gate = None
        if ctx.needs_input_grad[2]:
            n = grad.shape[0]
            diff = (full - sc).reshape(n, -1, 1)
            grad_gate = torch.bmm(grad.reshape(n, 1, -1), diff).view(n).to(ctx.gate_dtype)
        return grad_res, grad_sc, grad_gate


def _run_block_sparse(
    block: nn.Module,
    x: Tensor,
    run: Tensor,
    n_run: int | None = None,
    pooled: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Run the block's residual branch only on the samples with ``run`` set.

    Args:
        block: the residual block.
        x: its input (B, C, H, W).
        run: (B,) bool.
        n_run: ``run.sum()`` if the caller knows it (saves a reduction per block).
        pooled: ``global_pool(x)`` (B, C) if the caller tracks pooled features, else None.

    Returns:
        the block's output, and its pooled features when ``pooled`` was given (else None).
    """
    n_run = int(run.sum()) if n_run is None else n_run
    track = pooled is not None
    if n_run == run.numel():
        out = run_block(block, x)
        return out, global_pool(out) if track else None
    sc = shortcut(block, x)
    if n_run == 0:
        # A skipped identity block leaves its input, and so its pooled features, as they were.
        if track and block.downsample is not None:
            pooled = global_pool(sc)
        return sc, pooled
    idx = run.nonzero().squeeze(1)
    xs = x.index_select(0, idx)
    # With an identity shortcut the gathered input is also the gathered shortcut.
    scs = xs if block.downsample is None else sc.index_select(0, idx)
    out = _add_relu(block.residual(xs), scs)
    # Without autograd, write the executed rows in place rather than copying the batch. The
    # input is the previous block's output, which nothing else reads after this block.
    y = sc.index_copy(0, idx, out) if torch.is_grad_enabled() else _copy_rows_(sc, idx, out)
    if not track:
        return y, None
    if block.downsample is not None:
        return y, global_pool(y)
    # Only the executed rows changed: pool those where they were computed.
    return y, pooled.index_copy(0, idx, global_pool(out))


def _copy_rows_(dst: Tensor, idx: Tensor, src: Tensor) -> Tensor:
    """``dst[idx] = src`` in place, for sorted ``idx``. On CPU one ``copy_`` per run of
    consecutive rows, which is faster there than ``index_copy_`` (docs/benchmarks.md, "Scatter
    by runs of rows"); on an accelerator one ``index_copy_`` (one kernel launch rather than one
    per run)."""
    if dst.device.type != "cpu":
        return dst.index_copy_(0, idx, src)
    rows = idx.tolist()
    start = 0
    for k in range(1, len(rows) + 1):
        if k == len(rows) or rows[k] != rows[k - 1] + 1:
            dst.narrow(0, rows[start], k - start).copy_(src.narrow(0, start, k - start))
            start = k
    return dst
