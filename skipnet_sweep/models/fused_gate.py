"""An optional C++ kernel for one step of the folded recurrent gate at inference.

At batch 1 a gated block's overhead is per-call dispatch, not arithmetic: ``lstm_cell`` alone
is about a dozen ATen calls on 40 numbers (docs/benchmarks.md). This kernel does the whole
step of ``RNNGate.pooled_step`` (input projection, LSTM cell, logit layer) in one call, with
the same formulas as ``F.linear``, ``torch.lstm_cell`` and ``F.linear``; it is a few thousand
multiply-adds per sample, so one thread and plain loops are enough.

It is compiled on first ``load()`` with ``torch.utils.cpp_extension.load_inline`` (needs a
C++ compiler; the build is cached by torch under ``TORCH_EXTENSIONS_DIR``) and never at import.
Without a compiler, or if the build fails, ``load()`` returns None and the gate runs its eager
form, which gives the same outputs up to rounding.
"""

from __future__ import annotations

import functools
import shutil
import warnings
from types import ModuleType

import torch
from torch import Tensor

_SOURCE = r"""
#include <torch/extension.h>
#include <cmath>
#include <tuple>
#include <vector>

template <typename T>
static inline T sigm(T v) { return T(1) / (T(1) + std::exp(-v)); }

// out[r] = b[r] + W[r, :] . v  (W row-major, rows x cols)
template <typename T>
static inline void affine(const T* w, const T* b, const T* v, int64_t rows, int64_t cols,
                          T* out) {
  for (int64_t r = 0; r < rows; ++r) {
    T acc = b ? b[r] : T(0);
    const T* wr = w + r * cols;
    for (int64_t k = 0; k < cols; ++k) acc += wr[k] * v[k];
    out[r] = acc;
  }
}

template <typename T>
static void step(const T* m, const T* h, const T* c, const T* proj_w, const T* proj_b,
                 const T* w_ih, const T* w_hh, const T* b_ih, const T* b_hh, const T* fc_w,
                 T fc_b, int64_t batch, int64_t in_dim, int64_t emb, int64_t hid, T* logit,
                 T* h_out, T* c_out) {
  std::vector<T> e(emb), zi(4 * hid), zh(4 * hid);
  for (int64_t n = 0; n < batch; ++n) {
    affine(proj_w, proj_b, m + n * in_dim, emb, in_dim, e.data());
    affine(w_ih, b_ih, e.data(), 4 * hid, emb, zi.data());
    affine(w_hh, b_hh, h + n * hid, 4 * hid, hid, zh.data());
    // Gate order of torch's LSTM: input, forget, cell, output.
    T out = fc_b;
    for (int64_t j = 0; j < hid; ++j) {
      T i = sigm(zi[j] + zh[j]);
      T f = sigm(zi[hid + j] + zh[hid + j]);
      T g = std::tanh(zi[2 * hid + j] + zh[2 * hid + j]);
      T o = sigm(zi[3 * hid + j] + zh[3 * hid + j]);
      T cy = f * c[n * hid + j] + i * g;
      T hy = o * std::tanh(cy);
      c_out[n * hid + j] = cy;
      h_out[n * hid + j] = hy;
      out += fc_w[j] * hy;
    }
    logit[n] = out;
  }
}

// One RNNGate step on pooled features: linear projection, LSTM cell, logit layer.
std::tuple<at::Tensor, at::Tensor, at::Tensor> rnn_gate_step(
    const at::Tensor& pooled, const at::Tensor& h, const at::Tensor& c,
    const at::Tensor& proj_w, const at::Tensor& proj_b, const at::Tensor& w_ih,
    const at::Tensor& w_hh, const at::Tensor& b_ih, const at::Tensor& b_hh,
    const at::Tensor& fc_w, const at::Tensor& fc_b) {
  auto p = pooled.contiguous(), hc = h.contiguous(), cc = c.contiguous();
  auto pw = proj_w.contiguous(), pb = proj_b.contiguous(), wi = w_ih.contiguous();
  auto wh = w_hh.contiguous(), bi = b_ih.contiguous(), bh = b_hh.contiguous();
  auto fw = fc_w.contiguous(), fb = fc_b.contiguous();
  const int64_t batch = p.size(0), in_dim = p.size(1), emb = pw.size(0), hid = hc.size(1);
  TORCH_CHECK(pw.size(1) == in_dim && wi.size(1) == emb && wh.size(0) == 4 * hid,
              "rnn_gate_step: parameter shapes do not match the pooled input");
  auto logit = at::empty({batch}, p.options());
  auto h_out = at::empty({batch, hid}, p.options());
  auto c_out = at::empty({batch, hid}, p.options());
  AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "rnn_gate_step", [&] {
    step<scalar_t>(p.data_ptr<scalar_t>(), hc.data_ptr<scalar_t>(), cc.data_ptr<scalar_t>(),
                   pw.data_ptr<scalar_t>(), pb.data_ptr<scalar_t>(), wi.data_ptr<scalar_t>(),
                   wh.data_ptr<scalar_t>(), bi.data_ptr<scalar_t>(), bh.data_ptr<scalar_t>(),
                   fw.data_ptr<scalar_t>(), fb.data_ptr<scalar_t>()[0], batch, in_dim, emb,
                   hid, logit.data_ptr<scalar_t>(), h_out.data_ptr<scalar_t>(),
                   c_out.data_ptr<scalar_t>());
  });
  return {logit, h_out, c_out};
}
"""


@functools.cache
def load() -> ModuleType | None:
    """Build (first call in a process; cached on disk by torch) and return the kernel's
    module, or None where no C++ compiler is found or the build fails (with a warning)."""
    if shutil.which("c++") is None and shutil.which("g++") is None:
        return None
    from torch.utils.cpp_extension import load_inline

    try:
        return load_inline(
            name="skipnet_rnn_gate_step",
            cpp_sources=_SOURCE,
            functions=["rnn_gate_step"],
            extra_cflags=["-O3"],
            verbose=False,
        )
    except Exception as e:  # a failed build must not stop inference: the eager gate works
        warnings.warn(f"fused RNN gate kernel not built ({e}); using the eager gate", stacklevel=2)
        return None


def loaded() -> ModuleType | None:
    """The kernel's module if ``load()`` has already built it in this process, else None
    (never starts a build)."""
    return load() if load.cache_info().currsize else None


def for_input(x: Tensor) -> ModuleType | None:
    """The built kernel if it can take gate steps on ``x``'s device and dtype in the current
    grad mode (CPU, float32/float64, no autograd: it has no backward), else None.

    Also None under a ``TorchDispatchMode`` (FLOP counting, ``skipnet_sweep.flops``): the
    kernel is one opaque call that such modes cannot see into, so the gate keeps its ATen
    operations there and is counted like the network's other layers.
    """
    kernel = loaded()
    if (
        kernel is None
        or x.device.type != "cpu"
        or x.dtype not in (torch.float32, torch.float64)
        or torch.is_grad_enabled()
        or torch._C._len_torch_dispatch_stack() > 0
    ):
        return None
    return kernel
