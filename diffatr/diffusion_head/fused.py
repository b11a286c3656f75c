"""The factorised, fused inference path of the denoiser: the same x0_hat as `Denoiser.forward`.

Reads nothing, writes nothing: functions over a `Denoiser`'s weights (training's version of the
same algebra, with gradients and both directions stacked, is `stacked.py`). The reference form
concatenates [E, C_j] and runs the 2D x 2D decoder for every (query, candidate) at every step.
Most of that work depends on neither the query nor the step (notation beyond denoiser.py):

    W1 = [W1_E | W1_C]        decoder.0's weight split into the E half and the C_j half
    KC = C W_K^T, VC = C W_V^T          per-candidate constants, (Nc, D)
    GC = C W1_C^T + b1                  the decoder's first layer on the candidate half, (Nc, 2D)
    HE = E W1_E^T                       the same layer on the query half, (B, 2D)
    logit_bj = w2 . relu(HE_b + GC_j) + b2      the only per-(query, candidate) work

Q . (W_K pj) is the same for every candidate of a query, so it drops out of the softmax over N,
and sum_j A_j = 1 turns sum_j A_j (VC_j + W_V pj) into A VC + W_V pj. What remains per step is
the add-ReLU-dot of the last line: one torch.compile'd loop (inductor emits C++/OpenMP on CPU
and Triton on CUDA) that never holds the (B, N, 2D) tensor, or bounded eager blocks when
compiling is off or unavailable.

`GalleryDenoiser.sample` runs DDIM itself (ddim.py's arithmetic): each step, denoiser and
update together, is one compiled call, and the query's attention logits split into a part
fixed per block and a per-step table, (QC + WQp_k) . KC_j = QC . KC_j + WK_kj, so a step reads
only VCM and GC. One call per step instead of a dozen operators: a compiled call costs ~0.1-1 ms
of dynamo/wrapper time whatever its size, and 96 blocks x 50 steps made that cost as large as
the kernels' own. Over gathered candidates in float32 on the CPU (every top-k re-ranking of
`evaluate --head` and `ablate`), `sample` hands the whole loop to native_ddim.py's C kernel
instead (its numba twin without a C compiler or with `compiled` off): each query through all
its steps while its candidates sit in the core's cache, and no torch.compile in the process;
these torch steps are the loops' oracle and serve the rest (the whole gallery, CUDA, float64).
"""

from dataclasses import dataclass

import torch

from ..compiling import first_call, is_compile_failure, warn_fallback
from . import native_ddim
from .ddim import ddim_coefficients
from .denoiser import Denoiser

EAGER_BLOCK_ELEMENTS = 1 << 22  # eager fallback: (rows, N, 2D) blocks of at most 16 MB


def _pair_logits_gathered(HE: torch.Tensor, GCg: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """(B, 2D), (B, N, 2D), (2D,) -> (B, N): w2 . relu(HE_b + GC_bj)."""
    return (torch.relu(HE.unsqueeze(1) + GCg) * w2).sum(-1)


def _pair_logits_shared(HE: torch.Tensor, GC: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """(B, 2D), (N, 2D), (2D,) -> (B, N): every query against the same candidates."""
    return (torch.relu(HE.unsqueeze(1) + GC.unsqueeze(0)) * w2).sum(-1)


_COMPILED: dict[str, object] = {}


def _compiled(name: str, fn):
    """torch.compile'd `fn`, built once per process; inductor caches the code on disk."""
    if name not in _COMPILED:
        _COMPILED[name] = torch.compile(fn, dynamic=True)
    return _COMPILED[name]


def _eager_blocks(HE: torch.Tensor, GC: torch.Tensor, w2: torch.Tensor, shared: bool):
    n, width = GC.shape[-2], GC.shape[-1]
    rows = max(1, EAGER_BLOCK_ELEMENTS // max(1, n * width))
    out = []
    for s in range(0, len(HE), rows):
        he = HE[s : s + rows].unsqueeze(1)  # (b, 1, 2D)
        gc = GC.unsqueeze(0) if shared else GC[s : s + rows]  # (b | 1, N, 2D)
        out.append(torch.relu(he + gc) @ w2)  # (b, N)
    return torch.cat(out) if out else HE.new_zeros(0, n)


@dataclass
class Split:
    """A Denoiser's weights, split as the factorisation needs them (views, autograd-friendly)."""

    W_Q: torch.Tensor
    W_K: torch.Tensor
    W_V: torch.Tensor
    W_O: torch.Tensor
    b_O: torch.Tensor
    W1_E: torch.Tensor
    W1_C: torch.Tensor
    b1: torch.Tensor
    w2: torch.Tensor
    b2: torch.Tensor

    @classmethod
    def of(cls, m: Denoiser) -> "Split":
        D = m.dim
        W1 = m.decoder[0].weight  # (2D, 2D), input ordered [E, C_j]
        return cls(
            W_Q=m.q_proj.weight,
            W_K=m.k_proj.weight,
            W_V=m.v_proj.weight,
            W_O=m.out_proj.weight,
            b_O=m.out_proj.bias,
            W1_E=W1[:, :D],
            W1_C=W1[:, D:],
            b1=m.decoder[0].bias,
            w2=m.decoder[2].weight[0],
            b2=m.decoder[2].bias[0],
        )


def _step_gathered(x_k, Qp, HEp, KC, VCM, GC, w2, b2):
    """One inference step over per-query candidates KC (B, N, D), VCM and GC (B, N, 2D)."""
    A = torch.softmax((Qp.unsqueeze(1) * KC).sum(-1) + x_k, dim=-1)  # (B, N)
    HE = (A.unsqueeze(-1) * VCM).sum(1) + HEp  # (B, 2D)
    return _pair_logits_gathered(HE, GC, w2) + b2 + A


def _step_shared(x_k, Qp, HEp, KC, VCM, GC, w2, b2):
    """One inference step with every query over the same candidates KC (N, D), VCM, GC (N, 2D)."""
    A = torch.softmax(Qp @ KC.T + x_k, dim=-1)  # (B, N)
    HE = A @ VCM + HEp  # (B, 2D)
    return _pair_logits_shared(HE, GC, w2) + b2 + A


def _step_eager(x_k, Qp, HEp, KC, VCM, GC, w2, b2):
    """Either step in eager PyTorch, the pair loop in bounded blocks."""
    shared = KC.dim() == 2
    if shared:
        A = torch.softmax(Qp @ KC.T + x_k, dim=-1)  # (B, N)
        HE = A @ VCM + HEp  # (B, 2D)
    else:
        A = torch.softmax(torch.einsum("bd,bnd->bn", Qp, KC) + x_k, dim=-1)  # (B, N)
        HE = torch.einsum("bn,bnd->bd", A, VCM) + HEp  # (B, 2D)
    return _eager_blocks(HE, GC, w2, shared) + b2 + A


def _ddim_update(x_k, x0_hat, c):
    """Clamp x0_hat and take DDIM's deterministic step: (x0_hat, x_prev) (ddim.py; c = the
    step's sqrt_a, sqrt_1ma, sqrt_a_prev, dir as 0-d tensors, so one compiled graph serves all:
    floats would be specialised, and a (4,) tensor's size could be "duck-sized" equal to a
    block of 4 queries, compiling again for other blocks)."""
    x0_hat = x0_hat.clamp(-1.0, 1.0)
    eps_hat = (x_k - c[0] * x0_hat) / c[1]
    return x0_hat, c[2] * x0_hat + c[3] * eps_hat


def _ddim_gathered(x_k, QK, WK, HEp, VCM, GC, w2, b2, c):
    """One DDIM step over per-query candidates: QK, WK (B, N) the logits' two parts, VCM and
    GC (B, N, 2D)."""
    A = torch.softmax(QK + WK + x_k, dim=-1)  # (B, N)
    HE = (A.unsqueeze(-1) * VCM).sum(1) + HEp  # (B, 2D)
    return _ddim_update(x_k, _pair_logits_gathered(HE, GC, w2) + b2 + A, c)


def _ddim_shared(x_k, QK, WK, HEp, VCM, GC, w2, b2, c):
    """One DDIM step with every query over the same candidates: QK (B, N), WK (N,), VCM and
    GC (N, 2D)."""
    A = torch.softmax(QK + WK + x_k, dim=-1)  # (B, N)
    HE = A @ VCM + HEp  # (B, 2D)
    return _ddim_update(x_k, _pair_logits_shared(HE, GC, w2) + b2 + A, c)


def _ddim_eager(x_k, QK, WK, HEp, VCM, GC, w2, b2, c):
    """Either DDIM step in eager PyTorch, the pair loop in bounded blocks."""
    shared = VCM.dim() == 2
    A = torch.softmax(QK + WK + x_k, dim=-1)  # (B, N)
    HE = (A @ VCM if shared else torch.einsum("bn,bnd->bd", A, VCM)) + HEp  # (B, 2D)
    return _ddim_update(x_k, _eager_blocks(HE, GC, w2, shared) + b2 + A, c)


class GalleryDenoiser:
    """A trained Denoiser with every candidate's constants precomputed once (inference).

    Beyond the training factorisation, the two query-side matmuls fold into the candidates:
    HE = W1_E (W_O (A VC + W_V pj) + b_O) = sum_j A_j VCM_j + W1_E W_O W_V pj + W1_E b_O, with
    VCM = VC (W1_E W_O)^T precomputed (Nc, 2D). A step is then only per-pair work: a dot product
    for the attention logits, a weighted sum for HE and the add-ReLU-dot of the decoder; with
    `compiled` it is one torch.compile'd function, or the C loop of native_ddim.py (`native`).
    """

    def __init__(self, m: Denoiser, gallery: torch.Tensor, n_steps: int, compiled: bool = True):
        with torch.no_grad():
            w = Split.of(m)
            self.w = Split(**{f: t.detach() for f, t in vars(w).items()})
            M = self.w.W1_E @ self.w.W_O  # (2D, D)
            self.KC = gallery @ self.w.W_K.T  # (Nc, D)
            self.VCM = gallery @ (M @ self.w.W_V).T  # (Nc, 2D)
            self.GC = gallery @ self.w.W1_C.T + self.w.b1  # (Nc, 2D)
            pj = m.step_embedding(torch.arange(n_steps, device=gallery.device))  # (K, D)
            self.WQp = pj @ self.w.W_Q.T  # (K, D)
            self.HEp = pj @ (M @ self.w.W_V).T + self.w.W1_E @ self.w.b_O  # (K, 2D)
            self.WK = self.WQp @ self.KC.T  # (K, Nc): the step's part of the attention logits
            # one tensor per step, not views of (K, .): dynamo specialises a view's storage
            # offset at 0, so views would compile the step twice (measured: 2 graphs)
            self.HEp_steps = [h.clone() for h in self.HEp]  # K x (2D,)
            self.WK_steps = [w.clone() for w in self.WK]  # K x (Nc,)
        self.compiled = compiled

    def query_constants(self, query: torch.Tensor) -> torch.Tensor:
        """QC = c_q W_Q^T, (B, D)."""
        return query @ self.w.W_Q.T

    def model_fn(self, QC: torch.Tensor, idx: torch.Tensor | None):
        """model_fn(x_k, k) for DDIM over the candidates idx (B, N) of each query, or all."""
        if idx is None:
            KC, VCM, GC = self.KC, self.VCM, self.GC
        else:
            KC, VCM, GC = self.KC[idx], self.VCM[idx], self.GC[idx]  # (B, N, D | 2D)
        w2, b2 = self.w.w2, self.w.b2

        def fn(x_k: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
            args = (x_k, QC + self.WQp[k], self.HEp[k], KC, VCM, GC, w2, b2)
            if self.compiled:
                step = _step_shared if idx is None else _step_gathered
                try:
                    return _compiled(step.__name__, step)(*args)
                except Exception as exc:  # the step is pure: eager after a compile failure
                    if not is_compile_failure(exc):
                        raise
                    warn_fallback(exc, "using eager code")
                    self.compiled = False
            return _step_eager(*args)

        return fn

    @torch.no_grad()
    def sample(
        self,
        query: torch.Tensor,
        idx: torch.Tensor | None,
        x_T: torch.Tensor,
        betas: torch.Tensor,
        steps: int | None = None,
        eta: float = 0.0,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """DDIM from x_T (B, N) over the candidates idx (B, N) of each query (B, D), or all:
        the final x0_hat, as `ddim_sample(self.model_fn(...), x_T, betas, steps, eta,
        noise=noise)` with clip=True, one compiled call per step."""
        QC = self.query_constants(query)  # (B, D)
        coefficients = ddim_coefficients(betas, steps, eta)
        loop = None if idx is None else self.native(x_T)
        if loop:  # the C (or numba) loop: all steps of a row at once, QK inside (no gather)
            w, tables = self.w, (self.VCM, self.GC, self.WK, self.HEp)
            return native_ddim.ddim_rows(
                QC, self.KC, idx, *tables, w.w2, w.b2, coefficients, x_T, noise, loop=loop
            )
        if idx is None:
            QK, VCM, GC = QC @ self.KC.T, self.VCM, self.GC  # (B, N), (N, 2D) x 2
            WK = self.WK_steps  # K x (N,)
        else:
            QK = torch.einsum("bd,bnd->bn", QC, self.KC[idx])  # (B, N), once per block
            VCM, GC = self.VCM[idx], self.GC[idx]  # (B, N, 2D)
            WK = {k: self.WK_steps[k][idx] for k, _ in coefficients}  # (B, N) per step
        # no views among the step's inputs: a view's guards name its base (`x_T` is a row of
        # the noise, the next steps' x_k are not views), and the first call's guards failed on
        # the second, compiling the step twice in every process (measured ~1.5 s)
        QK = QK.clone()
        x_k = x0_hat = x_T.clone()
        for n, (k, c) in enumerate(coefficients):
            table = tuple(torch.tensor(v, dtype=x_T.dtype, device=x_T.device) for v in c[:4])
            args = (x_k, QK, WK[k], self.HEp_steps[k], VCM, GC, self.w.w2, self.w.b2, table)
            x0_hat, x_k = self._ddim_step(idx is None, args)
            if c.sigma > 0:
                x_k = x_k + c.sigma * noise[n]
        return x0_hat

    def native(self, x_T: torch.Tensor) -> str | None:
        """Which native loop `sample` runs over gathered candidates (native_ddim.backend): "c"
        with compiled code allowed and a C compiler, else "numba"; None (the torch steps)
        off the CPU or float32."""
        return native_ddim.backend(self.compiled, x_T, self.VCM, self.GC)

    def _ddim_step(self, shared: bool, args):
        if self.compiled:
            step = _ddim_shared if shared else _ddim_gathered
            try:
                fn = _compiled(step.__name__, step)
                return first_call(step.__name__, "the head's kernels", fn, *args)
            except Exception as exc:  # the step is pure: eager after a compile failure
                if not is_compile_failure(exc):
                    raise
                warn_fallback(exc, "using eager code")
                self.compiled = False
        return _ddim_eager(*args)
