"""Naive, obviously-correct oracles for the diffusion head (method.md, "Phase 2"): Python floats,
`math` and explicit loops over queries, candidates and channels, read straight off the page.

They are the test oracles for `diffatr.diffusion_head` (the denoiser, the schedules, q_sample and
DDIM) and were written from method.md alone, without reading the implementation they check.
Nothing here is fast; keep the sizes small (B, N <= ~10, D <= ~32).
"""

import math

import torch

# ---------------------------------------------------------------- schedules (method.md, Forward)


def naive_abar_fn(s: float) -> float:
    """abar(s) = cos^2(((s) + 0.008) / 1.008 * pi/2), s = i/K in [0, 1]."""
    return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2


def naive_cosine_betas(K: int) -> list[float]:
    """beta_i = min(1 - abar((i+1)/K) / abar(i/K), 0.999), i = 0..K-1."""
    return [min(1 - naive_abar_fn((i + 1) / K) / naive_abar_fn(i / K), 0.999) for i in range(K)]


def naive_linear_betas(K: int, start: float = 1e-4, end: float = 0.02) -> list[float]:
    """diffusers' "linear": evenly spaced from start to end, both ends included."""
    if K == 1:
        return [start]
    return [start + (end - start) * i / (K - 1) for i in range(K)]


def naive_alphabar(betas: list[float]) -> list[float]:
    """alphabar_k = prod_{i<=k} (1 - beta_i)."""
    out, prod = [], 1.0
    for b in betas:
        prod *= 1 - b
        out.append(prod)
    return out


def naive_q_sample(x0, k, abar, eps) -> list[list[float]]:
    """x_k = sqrt(abar_k) x0 + sqrt(1 - abar_k) eps, row by row with that row's k."""
    x0, eps, abar = x0.tolist(), eps.tolist(), [float(a) for a in abar]
    out = []
    for b, kb in enumerate(k.tolist()):
        a = abar[kb]
        out.append(
            [math.sqrt(a) * x0[b][j] + math.sqrt(1 - a) * eps[b][j] for j in range(len(x0[b]))]
        )
    return out


# ---------------------------------------------------------------- denoiser (method.md, Denoiser)


def naive_sinusoid(k: int, D: int) -> list[float]:
    """Row k of the fixed table: pe[2i] = sin(k / 10000^(2i/D)), pe[2i+1] = cos(same)."""
    pe = [0.0] * D
    for c in range(D):
        two_i = c - (c % 2)
        angle = k / 10000 ** (two_i / D)
        pe[c] = math.sin(angle) if c % 2 == 0 else math.cos(angle)
    return pe


def _matvec(W: list[list[float]], v: list[float], b: list[float] | None = None) -> list[float]:
    """W v (+ b) with W stored as torch Linear weights are: (out, in)."""
    out = []
    for r, row in enumerate(W):
        s = sum(w * x for w, x in zip(row, v, strict=True))
        out.append(s + (b[r] if b is not None else 0.0))
    return out


def _silu(v: list[float]) -> list[float]:
    return [x / (1 + math.exp(-x)) for x in v]


def _relu(v: list[float]) -> list[float]:
    return [max(x, 0.0) for x in v]


def _add(u: list[float], v: list[float]) -> list[float]:
    return [a + b for a, b in zip(u, v, strict=True)]


def _dot(u: list[float], v: list[float]) -> float:
    return sum(a * b for a, b in zip(u, v, strict=True))


def naive_denoiser(
    state: dict, x_k, k, query, candidates, decoder_order: str = "E,C"
) -> torch.Tensor:
    """x0_hat (B, N) from a Denoiser state_dict, one query and one candidate at a time.

    decoder_order="C,E" builds the wrong model on purpose (a test that the order matters).
    """
    W = {name: t.detach().double().tolist() for name, t in state.items()}
    x_k, k, query = x_k.double().tolist(), k.tolist(), query.double().tolist()
    B, N, D = len(x_k), len(x_k[0]), len(query[0])
    cand = candidates.double()
    if cand.dim() == 2:
        cand = cand.unsqueeze(0).expand(B, N, D)
    cand = cand.tolist()
    out = []
    for b in range(B):
        # 1. step embedding pj(k) = Linear -> SiLU -> Linear of the sinusoid row k
        h = _silu(_matvec(W["time_mlp.0.weight"], naive_sinusoid(k[b], D), W["time_mlp.0.bias"]))
        pj = _matvec(W["time_mlp.2.weight"], h, W["time_mlp.2.bias"])
        # 2. Q = W_Q (c_q + pj), K_j = W_K (C_j + pj), V_j = W_V (C_j + pj)
        Q = _matvec(W["q_proj.weight"], _add(query[b], pj))
        Ks = [_matvec(W["k_proj.weight"], _add(cand[b][j], pj)) for j in range(N)]
        Vs = [_matvec(W["v_proj.weight"], _add(cand[b][j], pj)) for j in range(N)]
        # 3. A = softmax_j(Q . K_j + x_k[j]), no 1/sqrt(D)
        s = [_dot(Q, Ks[j]) + x_k[b][j] for j in range(N)]
        m = max(s)
        e = [math.exp(v - m) for v in s]
        A = [v / sum(e) for v in e]
        # 4. E = W_O (sum_j A_j V_j) + b_O
        mix = [sum(A[j] * Vs[j][c] for j in range(N)) for c in range(D)]
        E = _matvec(W["out_proj.weight"], mix, W["out_proj.bias"])
        # 5. decoder on [E, C_j]; 6. x0_hat = logit + A
        row = []
        for j in range(N):
            z = E + cand[b][j] if decoder_order == "E,C" else cand[b][j] + E
            h2 = _relu(_matvec(W["decoder.0.weight"], z, W["decoder.0.bias"]))
            logit = _matvec(W["decoder.2.weight"], h2, W["decoder.2.bias"])[0]
            row.append(logit + A[j])
        out.append(row)
    return torch.tensor(out, dtype=torch.float64)


def random_model(D: int, seed: int = 0):
    """A float64 Denoiser (the module under test) with weights large enough that every term
    shows in the output; the oracles above never use it."""
    from diffatr.diffusion_head import Denoiser

    torch.manual_seed(seed)
    m = Denoiser(dim=D).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.4)
    return m


def random_inputs(B: int, N: int, D: int, shared: bool, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x_k = torch.randn(B, N, generator=g, dtype=torch.float64)
    k = torch.randint(0, 50, (B,), generator=g)
    k[0] = 0
    query = torch.randn(B, D, generator=g, dtype=torch.float64)
    shape = (N, D) if shared else (B, N, D)
    cand = torch.randn(*shape, generator=g, dtype=torch.float64)
    return x_k, k, query, cand


# ---------------------------------------------------------------- DDIM (method.md, Sampling)


def leading_timesteps(K: int, steps: int | None) -> list[int]:
    """k visited, first to last: all of K-1..0, or arange(steps) * (K // steps) reversed."""
    if steps is None:
        return list(range(K - 1, -1, -1))
    ratio = K // steps
    return [i * ratio for i in range(steps)][::-1]


def naive_ddim(model_fn, x_T, betas: list[float], steps: int | None = None, clip: bool = True):
    """Deterministic DDIM (eta = 0), element by element in Python floats.

    Returns (final clamped x0_hat as (B, N) float64, [x_k seen by each model call]).
    The step after k is the next visited k (k - K // steps), abar of a negative step is 1.
    """
    K = len(betas)
    abar = naive_alphabar(betas)
    ks = leading_timesteps(K, steps)
    x = [[float(v) for v in row] for row in x_T.tolist()]
    seen = []
    x0 = None
    for pos, k in enumerate(ks):
        seen.append(torch.tensor(x, dtype=torch.float64))
        x0 = model_fn(torch.tensor(x, dtype=torch.float64), k).tolist()
        if clip:
            x0 = [[min(max(v, -1.0), 1.0) for v in row] for row in x0]
        a_k = abar[k]
        a_prev = abar[ks[pos + 1]] if pos + 1 < len(ks) else 1.0
        new = []
        for xr, x0r in zip(x, x0, strict=True):
            nr = []
            for xv, x0v in zip(xr, x0r, strict=True):
                eps_hat = (xv - math.sqrt(a_k) * x0v) / math.sqrt(1 - a_k)
                nr.append(math.sqrt(a_prev) * x0v + math.sqrt(1 - a_prev) * eps_hat)
            new.append(nr)
        x = new
    return torch.tensor(x0, dtype=torch.float64), seen


def k_column(k, x_k: torch.Tensor) -> torch.Tensor:
    """The step as a float tensor that broadcasts over x_k (B, N): a Python int or a (B,) tensor."""
    kk = torch.as_tensor(k).to(x_k.dtype)
    return kk[:, None] if kk.dim() == 1 else kk


def k_value(k) -> int:
    """The one step a sampler call is at, whether passed as an int or as a (B,) tensor of it."""
    kk = torch.as_tensor(k)
    if kk.dim() == 0:
        return int(kk)
    assert bool((kk == kk[0]).all()), f"one DDIM step should use one k for all rows, got {kk}"
    return int(kk[0])


def toy_model_fn(K: int):
    """A fixed nonlinear x0 predictor f(x_k, k) that mixes candidates and often leaves [-1, 1]."""

    def f(x_k: torch.Tensor, k) -> torch.Tensor:
        kk = k_column(k, x_k)
        t = kk / K
        mix = torch.softmax(2 * x_k, dim=-1)
        return 1.6 * torch.tanh(x_k * (1 + t)) + 0.4 * torch.sin(3 * x_k + kk) + mix - 0.2

    return f
