"""The training loss's forward and backward written out, the pair logits in C (`pair_logits.c`).

Reads nothing, writes nothing (the library is built into the compile cache by `diffatr.native`).
`stacked.group_losses` defines the loss; on the CPU its torch.compile'd forward and backward
cost a process ~30 s of inductor's C++ compiles with an empty compile cache (16 kernels and
the precompiled header: most of the demo's first run on a fresh machine) and ~1-2 s to load
with a warm one. Here the same computation is its matrix products as torch `bmm` calls (the
ones inductor's graph calls too), the gradient of each written out below, and the decoder's
pair logits and their three gradient sums in C, recomputing the (G, B, N, 2D) pre-activation
instead of storing it (eager torch would write ~8 MB per tensor several times a step). Nothing
to compile but one C file (~0.3 s, once per machine).

Notation as stacked.py; per group: the step embedding pj = W_2 silu(W_0 h + b_0) + b_2 with
h = table[k]; Q = W_Q (q + pj); K_C = W_K C; [V_C; V_p] = W_V [C; pj]; A = softmax(Q K_C^T +
x_k); E = W_O (A V_C + V_p) + b_O; HE = W1_E E, GC = W1_C C + b_1 (the decoder's first layer on
its two halves); logit = w2 . relu(HE_b + GC_j) + b + A; L_G = mean_b CE(s logit_b, b).

Float32, contiguous CPU tensors only; `usable` says when it applies, else the torch code.
`tests/test_native_loss.py` holds both the losses and every gradient to autograd through
`group_losses` (and so to the Denoiser reference).
"""

import ctypes
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import native
from ..device import denormals_flushed

SOURCE = Path(__file__).with_name("pair_logits.c")
WHAT = "the head's training kernel"

_P, _I, _C = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int


def library() -> ctypes.CDLL | None:
    """The built kernel (once per process), or None without a C compiler that builds it."""
    lib = native.load(SOURCE, WHAT, openmp=True)
    if lib is not None and lib.pair_logits.argtypes is None:
        lib.pair_logits.argtypes, lib.pair_logits.restype = [_I] * 4 + [_P] * 4 + [_C, _C], None
        grad = [_I] * 4 + [_P] * 8 + [_C, _C]
        lib.pair_logits_grad.argtypes, lib.pair_logits_grad.restype = grad, None
    return lib


def applies(tensors) -> bool:
    """Whether the kernel takes these tensors: float32 on the CPU (made contiguous here)."""
    return all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)


def usable(tensors) -> bool:
    """Whether the written-out step applies to these tensors and its C kernel is built."""
    return applies(tensors) and library() is not None


def _flags() -> tuple[int, int]:
    return int(denormals_flushed()), torch.get_num_threads()


def pair_logits(HE: torch.Tensor, GC: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """w2 . relu(HE_b + GC_j), (G, B, N), for HE (G, B, W), GC (G, N, W), w2 (G, W)."""
    (G, B, W), N = HE.shape, GC.shape[1]
    HE, GC, w2 = HE.contiguous(), GC.contiguous(), w2.contiguous()
    out = torch.empty(G, B, N, dtype=HE.dtype)
    ptrs = (t.data_ptr() for t in (HE, GC, w2, out))
    library().pair_logits(G, B, N, W, *ptrs, *_flags())
    return out


def pair_logits_grad(HE, GC, w2, dlogit) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dHE (G, B, W), dGC (G, N, W) and dw2 (G, W) from dlogit = dL/dlogit (G, B, N)."""
    (G, B, W), N = HE.shape, GC.shape[1]
    HE, GC, w2, dlogit = (t.contiguous() for t in (HE, GC, w2, dlogit))
    dHE, part = torch.empty_like(HE), torch.empty_like(HE)
    dGC, dw2 = torch.empty_like(GC), torch.empty_like(w2)
    ptrs = (t.data_ptr() for t in (HE, GC, w2, dlogit, dHE, dGC, dw2, part))
    library().pair_logits_grad(G, B, N, W, *ptrs, *_flags())
    return dHE, dGC, dw2


def _t(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(1, 2)


@torch.no_grad()
def losses_and_grads(P, step_table, query, cand, k, eps, abar, logit_scale) -> torch.Tensor:
    """Every group's L_G (G,), with the gradients of their sum added to P's trainable tensors'
    `.grad` (set where None), as `group_losses(...).sum().backward()` would."""
    G, B, D = query.shape
    N = cand.shape[1]
    bmm = torch.bmm
    W0, b0 = P["time_mlp.0.weight"], P["time_mlp.0.bias"]
    W2, b2 = P["time_mlp.2.weight"], P["time_mlp.2.bias"]
    WQ, WK, WV = P["q_proj.weight"], P["k_proj.weight"], P["v_proj.weight"]
    WO, bO = P["out_proj.weight"], P["out_proj.bias"]
    W1, b1 = P["decoder.0.weight"], P["decoder.0.bias"]
    w2, bd = P["decoder.2.weight"][:, 0], P["decoder.2.bias"]
    W1E, W1C = W1[:, :, :D], W1[:, :, D:]

    # forward (stacked.group_losses, operator by operator)
    a = abar[k].to(query.dtype)  # (G, B)
    x_k = (1 - a).sqrt().unsqueeze(-1) * eps  # q_sample of x0 = I: sqrt(a) added on the diagonal
    x_k.diagonal(dim1=1, dim2=2).add_(a.sqrt())
    h = step_table[k].to(query.dtype)  # (G, B, D)
    u = torch.baddbmm(b0.unsqueeze(1), h, _t(W0))
    s = F.silu(u)
    pj = torch.baddbmm(b2.unsqueeze(1), s, _t(W2))  # (G, B, D)
    q_in = query + pj
    Q = bmm(q_in, _t(WQ))
    KC = bmm(cand, _t(WK))  # (G, N, D)
    C_pj = torch.cat([cand, pj], 1)  # (G, N + B, D)
    V = bmm(C_pj, _t(WV))  # [V_C; V_p]
    VC, Vp = V[:, :N], V[:, N:]
    A = torch.softmax(torch.baddbmm(x_k, Q, _t(KC)), -1)  # (G, B, N)
    E_in = torch.baddbmm(Vp, A, VC)
    E = torch.baddbmm(bO.unsqueeze(1), E_in, _t(WO))  # (G, B, D)
    HE = bmm(E, _t(W1E))  # (G, B, 2D)
    GC = torch.baddbmm(b1.unsqueeze(1), cand, _t(W1C))  # (G, N, 2D)
    logit = pair_logits(HE, GC, w2) + bd.view(G, 1, 1) + A
    logp = torch.log_softmax(logit_scale * logit, -1)
    losses = -logp.diagonal(dim1=1, dim2=2).mean(1)  # CE against the diagonal, mean over B

    # backward of losses.sum()
    grads = {}
    dlogit = logp.exp_()  # softmax(s logit) - onehot, times s / B
    dlogit.diagonal(dim1=1, dim2=2).sub_(1)
    dlogit.mul_(logit_scale / B)
    dHE, dGC, dw2 = pair_logits_grad(HE, GC, w2, dlogit)
    grads["decoder.2.weight"] = dw2.unsqueeze(1)
    grads["decoder.2.bias"] = dlogit.sum((1, 2)).view(G, 1)
    dW1 = torch.empty_like(W1)  # [dHE^T E | dGC^T C], each half written in place
    bmm(_t(dHE), E, out=dW1[:, :, :D])
    bmm(_t(dGC), cand, out=dW1[:, :, D:])
    grads["decoder.0.weight"], grads["decoder.0.bias"] = dW1, dGC.sum(1)
    dE = bmm(dHE, W1E)
    grads["out_proj.weight"], grads["out_proj.bias"] = bmm(_t(dE), E_in), dE.sum(1)
    dE_in = bmm(dE, WO)  # = dV_p
    dA = torch.baddbmm(dlogit, dE_in, _t(VC))
    dV = torch.cat([bmm(_t(A), dE_in), dE_in], 1)  # [dV_C; dV_p]
    grads["v_proj.weight"] = bmm(_t(dV), C_pj)
    dS = A * (dA - (dA * A).sum(-1, keepdim=True))  # softmax's backward
    dQ = bmm(dS, KC)
    grads["q_proj.weight"] = bmm(_t(dQ), q_in)
    grads["k_proj.weight"] = bmm(_t(bmm(_t(dS), Q)), cand)
    dpj = torch.baddbmm(bmm(dE_in, WV), dQ, WQ)  # through V_p and through Q
    grads["time_mlp.2.weight"], grads["time_mlp.2.bias"] = bmm(_t(dpj), s), dpj.sum(1)
    sig = torch.sigmoid(u)
    du = bmm(dpj, W2) * sig * (1 + u * (1 - sig))  # silu'(u) = sig (1 + u (1 - sig))
    grads["time_mlp.0.weight"], grads["time_mlp.0.bias"] = bmm(_t(du), h), du.sum(1)
    for name, p in P.items():
        if p.requires_grad:
            g = grads[name].view(p.shape)
            if p.grad is None:
                p.grad = g
            else:
                p.grad.add_(g)
    return losses
