"""Winograd F(2x2, 3x3) convolution (Lavin & Gray, 2016, "Fast Algorithms for Convolutional
Neural Networks", section 4) for inference: a 3x3, stride-1, padding-1 conv + bias + ReLU,
optionally followed by a 2x2 average pool, as 16 batched matrix products.

Reads/writes nothing. Activations are channels-last, (B, H, W, C) contiguous, which is what a
`torch.channels_last` (B, C, H, W) tensor is once permuted (a view, no copy).

Notation (m = 2 outputs per tile side, r = 3 taps, a = m + r - 1 = 4 input tile side):
  g (Co, Ci, 3, 3) kernel      d (a, a) input tile (stride m)      P tiles in a chunk
  B^T (a, a), G (a, r), A^T (m, a): the transforms of eq. (8)-(9) for F(2, 3)
  U = G g G^T    (a*a, Ci, Co)  transformed kernel, computed once in float64
  V = B^T d B    (a*a, P, Ci)   transformed input tiles
  M_k = V_k U_k  (a*a, P, Co)   one matrix product per tile position k (eq. 12)
  Y = A^T M A    (m, m, P, Co)  the output tiles, then + bias, ReLU, and the 2x2 pool
Exact in real arithmetic; in float32 it differs from the direct convolution by rounding
(~1e-6 relative per layer, tested against `F.conv2d`). It needs 16 multiplications per 4
outputs where the direct convolution needs 36, so deep layers (many channels, few pixels) run
~1.5-3x faster on CPU; shallow ones lose to the transforms' memory traffic.
"""

import torch
import torch.nn.functional as F

M, R = 2, 3  # outputs per tile side, kernel taps
A = M + R - 1  # input tile side
_BT = torch.tensor([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=torch.float64)
_G = torch.tensor([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=torch.float64)
_AT = torch.tensor([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=torch.float64)
# Tiles per chunk: each chunk buffer (a*a, P, C) at most CHUNK_BYTES, so it is reused memory in
# cache rather than a fresh mapping the kernel must fault in and zero (measured: 10x slower per
# byte past 32 MB, glibc's largest mmap threshold), and at least MIN_TILES, so the products
# still do ~P/2 flops per byte of U.
CHUNK_BYTES, MIN_TILES = 16 << 20, 64


class WinogradConv3x3:
    """relu(conv3x3(x, g) + bias) [-> 2x2 average pool] for channels-last float32 inputs."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, max_tiles: int | None = None):
        if weight.shape[2:] != (R, R):
            raise ValueError(f"expected a 3x3 kernel, got {tuple(weight.shape)}")
        c_out, c_in = int(weight.shape[0]), int(weight.shape[1])
        gg = torch.kron(_G, _G).to(weight.device)  # (a*a, r*r): vec(G g G^T) = gg vec(g)
        self.u = weight.new_empty(A * A, c_in, c_out, dtype=torch.float32)  # (a*a, Ci, Co)
        for o in range(0, c_out, 256):  # float64 in slices: 2048 x 2048 at once is 0.6 GB
            g = weight[o : o + 256].detach().to(torch.float64).reshape(-1, R * R)  # (256 Ci, r*r)
            u = (gg @ g.T).view(A * A, -1, c_in)  # (a*a, 256, Ci)
            self.u[:, :, o : o + 256] = u.transpose(1, 2)  # (a*a, Ci, 256)
        self.bias = bias.detach().float().to(weight.device)
        self.bb = torch.kron(_BT, _BT).float().to(weight.device)  # (a*a, a*a): vec(B^T d B)
        self.aa = torch.kron(_AT, _AT).float().to(weight.device)  # (m*m, a*a): vec(A^T M A)
        widest = A * A * 4 * max(c_in, c_out)  # bytes per tile of the largest chunk buffer
        self.max_tiles = max_tiles or max(MIN_TILES, CHUNK_BYTES // widest)
        self.c_in, self.c_out = c_in, c_out

    def __call__(self, x: torch.Tensor, pool: bool) -> torch.Tensor:
        """x (B, H, W, Ci) -> (B, H, W, Co), or (B, H // 2, W // 2, Co) with `pool`."""
        b, h, w, _ = x.shape
        nh, nw = -(-h // M), -(-w // M)  # tiles per column / row (the last may overhang)
        xp = F.pad(x, (0, 0, 1, M * nw - w + 1, 1, M * nh - h + 1))  # (B, m nh + 2, m nw + 2, Ci)
        if pool:  # one pooled pixel per 2x2 tile; a trailing odd row/column is dropped
            out = x.new_empty(b, nh, nw, self.c_out)
        else:
            out = x.new_empty(b, M * nh, M * nw, self.c_out)
        rows = max(1, self.max_tiles // (b * nw))  # tile rows per chunk
        for i0 in range(0, nh, rows):
            n = min(rows, nh - i0)
            top = M * i0
            d = torch.stack(
                [
                    xp[:, top + u : top + u + M * n : M, v : v + M * nw : M]
                    for u in range(A)
                    for v in range(A)
                ]
            )  # (a*a, B, n, nw, Ci)
            v_ = (self.bb @ d.view(A * A, -1)).view(A * A, -1, self.c_in)  # (a*a, P, Ci)
            m_ = torch.bmm(v_, self.u)  # (a*a, P, Co)
            y = (self.aa @ m_.view(A * A, -1)).view(M * M, b, n, nw, self.c_out)
            y = y.add_(self.bias).relu_()  # (m*m, B, n, nw, Co)
            if pool:
                out[:, i0 : i0 + n] = y.mean(dim=0)  # (B, n, nw, Co)
            else:
                y = y.view(M, M, b, n, nw, self.c_out).permute(2, 3, 0, 4, 1, 5)
                out[:, top : top + M * n] = y.reshape(b, M * n, M * nw, self.c_out)
        if pool:
            return out[:, : h // 2, : w // 2]
        return out[:, :h, :w]
