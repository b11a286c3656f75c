"""The attention denoiser (method.md, Phase 2, "Denoiser") against a loop oracle written from the
page: parameter names and shapes (the checkpoint contract), init, and x0_hat to 1e-10 in float64."""

import pytest
import torch
from diffusion_oracle import naive_denoiser, naive_sinusoid, random_inputs, random_model

from diffatr.diffusion_head import Denoiser, sinusoidal_table


def expected_shapes(D: int) -> dict[str, tuple[int, ...]]:
    return {
        "time_mlp.0.weight": (D, D),
        "time_mlp.0.bias": (D,),
        "time_mlp.2.weight": (D, D),
        "time_mlp.2.bias": (D,),
        "q_proj.weight": (D, D),
        "k_proj.weight": (D, D),
        "v_proj.weight": (D, D),
        "out_proj.weight": (D, D),
        "out_proj.bias": (D,),
        "decoder.0.weight": (2 * D, 2 * D),
        "decoder.0.bias": (2 * D,),
        "decoder.2.weight": (1, 2 * D),
        "decoder.2.bias": (1,),
    }


@pytest.mark.parametrize("D", [8, 16, 512])
def test_parameter_names_and_shapes(D: int) -> None:
    m = Denoiser(dim=D)
    got = {name: tuple(p.shape) for name, p in m.named_parameters()}
    assert got == expected_shapes(D)
    # the state dict is exactly the parameters (no persistent buffers), so checkpoints made
    # with one K load for any other K
    assert {n: tuple(t.shape) for n, t in m.state_dict().items()} == expected_shapes(D)


def test_init_normal_0_02_weights_zero_biases() -> None:
    torch.manual_seed(0)
    m = Denoiser(dim=512)
    for name, param in m.named_parameters():
        p = param.detach()
        if name.endswith(".bias"):
            assert bool((p == 0).all()), name
        elif p.numel() >= 512 * 512:
            assert abs(float(p.std()) - 0.02) < 0.001, (name, float(p.std()))
            assert abs(float(p.mean())) < 0.001, name
        else:  # decoder.2.weight, 1024 values
            assert abs(float(p.std()) - 0.02) < 0.003, (name, float(p.std()))


@pytest.mark.parametrize("D", [8, 16])
@pytest.mark.parametrize("shared", [True, False])
def test_matches_naive_oracle_float64(D: int, shared: bool) -> None:
    B, N = 3, 5
    m = random_model(D)
    x_k, k, query, cand = random_inputs(B, N, D, shared)
    got = m(x_k, k, query, cand)
    assert got.shape == (B, N) and got.dtype == torch.float64
    want = naive_denoiser(m.state_dict(), x_k, k, query, cand)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_decoder_input_order_is_E_then_C() -> None:
    """The oracle with [C_j, E] is a different model: the test above would catch a swap."""
    D = 8
    m = random_model(D, seed=3)
    x_k, k, query, cand = random_inputs(3, 5, D, shared=False, seed=4)
    got = m(x_k, k, query, cand)
    swapped = naive_denoiser(m.state_dict(), x_k, k, query, cand, decoder_order="C,E")
    assert (got - swapped).abs().max() > 1e-2
    # zero the C_j half of the decoder's first layer: then only E reaches the logits, so
    # x0_hat[b, j] - A[b, j] is the same for every candidate j of a query
    with torch.no_grad():
        m.decoder[0].weight[:, D:] = 0
    want = naive_denoiser(m.state_dict(), x_k, k, query, cand)
    torch.testing.assert_close(m(x_k, k, query, cand), want, rtol=1e-10, atol=1e-10)


def test_shared_candidates_equal_expanded_per_query_candidates() -> None:
    D, B, N = 16, 3, 5
    m = random_model(D, seed=5)
    x_k, k, query, cand = random_inputs(B, N, D, shared=True, seed=6)
    torch.testing.assert_close(
        m(x_k, k, query, cand), m(x_k, k, query, cand.expand(B, N, D).contiguous())
    )


def test_rows_are_independent_and_k_is_per_row() -> None:
    D, B, N = 8, 4, 6
    m = random_model(D, seed=7)
    x_k, k, query, cand = random_inputs(B, N, D, shared=False, seed=8)
    k = torch.tensor([0, 7, 49, 7])
    full = m(x_k, k, query, cand)
    for b in range(B):
        one = m(x_k[b : b + 1], k[b : b + 1], query[b : b + 1], cand[b : b + 1])
        torch.testing.assert_close(one[0], full[b], rtol=1e-12, atol=1e-12)
    assert (full[1] - m(x_k, k.flip(0), query, cand)[1]).abs().max() > 1e-6  # k matters


def test_residual_is_the_attention_distribution() -> None:
    """With the last decoder layer zeroed, x0_hat = A: a softmax over N of Q.K_j + x_k[j]."""
    D, B, N = 8, 3, 5
    m = random_model(D, seed=9)
    with torch.no_grad():
        m.decoder[2].weight.zero_()
        m.decoder[2].bias.zero_()
    x_k, k, query, cand = random_inputs(B, N, D, shared=True, seed=10)
    A = m(x_k, k, query, cand)
    assert bool((A >= 0).all())
    torch.testing.assert_close(A.sum(-1), torch.ones(B, dtype=torch.float64))
    torch.testing.assert_close(A, naive_denoiser(m.state_dict(), x_k, k, query, cand))
    # adding a constant to x_k leaves a softmax unchanged; adding it to one candidate does not
    torch.testing.assert_close(m(x_k + 3.0, k, query, cand), A)
    bumped = x_k.clone()
    bumped[:, 2] += 1.0
    assert bool((m(bumped, k, query, cand)[:, 2] > A[:, 2]).all())


def test_step_embedding_table_is_sin_even_cos_odd() -> None:
    """The oracle's table against hand values, then the model at several k with a time MLP whose
    first layer passes the table straight through (so a wrong table shows at once)."""
    pe = naive_sinusoid(3, 8)
    assert pe[0] == pytest.approx(0.1411200080598672)  # sin(3)
    assert pe[1] == pytest.approx(-0.9899924966004454)  # cos(3)
    assert pe[2] == pytest.approx(0.29552020666133955)  # sin(3 / 10000^(2/8)) = sin(0.3)
    assert pe[7] == pytest.approx(0.9999955000033750)  # cos(3 / 10000^(6/8)) = cos(0.003)
    D = 8
    m = random_model(D, seed=11)
    with torch.no_grad():
        m.time_mlp[0].weight.copy_(torch.eye(D, dtype=torch.float64) * 2.0)
        m.time_mlp[0].bias.zero_()
    x_k, _, query, cand = random_inputs(2, 4, D, shared=True, seed=12)
    for kv in (0, 1, 3, 40):
        k = torch.full((2,), kv)
        want = naive_denoiser(m.state_dict(), x_k, k, query, cand)
        torch.testing.assert_close(m(x_k, k, query, cand), want, rtol=1e-10, atol=1e-10)


def test_sinusoidal_table_values() -> None:
    """The table's values to float32 precision (the float64 checks above also need its
    float64 precision)."""
    table = sinusoidal_table(50, 16)
    assert table.shape == (50, 16)
    want = torch.tensor([naive_sinusoid(k, 16) for k in range(50)], dtype=torch.float64)
    torch.testing.assert_close(table.double(), want, rtol=0, atol=1e-6)


def test_float32_and_gradients_reach_every_parameter() -> None:
    D, B, N = 16, 3, 5
    torch.manual_seed(0)
    m = Denoiser(dim=D)
    x_k, k, query, cand = random_inputs(B, N, D, shared=False, seed=13)
    out = m(x_k.float(), k, query.float(), cand.float())
    assert out.dtype == torch.float32 and out.shape == (B, N)
    torch.nn.functional.cross_entropy(100 * out, torch.arange(B) % N).backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()), name
        if name != "decoder.2.bias":  # a shift shared by all candidates: CE ignores it
            assert float(p.grad.abs().sum()) > 0, name
