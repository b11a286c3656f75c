"""The training-free re-ranking baselines (diffatr/evaluate/baselines/) against naive dense
implementations written here from the papers' formulas: the whole S in float64 numpy,
column softmaxes with np.exp, the top-k chosen by a Python sort. Block splits, query blocks and
the pre-pass's block size must not change the scores; metrics through `paper_protocol` must
equal tests/retrieval_oracle.py's on the oracle's dense S'; QB-Norm's dynamic rule is exercised
with queries inside and outside the activation set."""

import itertools
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from retrieval_oracle import oracle_paper

from diffatr.cache import CacheWriter, SyntheticConfig, load_tensors, make_synthetic
from diffatr.cli import main
from diffatr.errors import UserError
from diffatr.evaluate import CosineScores, paper_protocol
from diffatr.evaluate.baselines import (
    BASELINES,
    BaselineConfig,
    baseline_scores,
    evaluate_baseline,
)

pytestmark = pytest.mark.usefixtures("one_thread")

D = 16


# ----------------------------------------------------------------------------- the oracles
def unit(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def dual_softmax(S: np.ndarray, T: float) -> np.ndarray:
    """S'_qj = S_qj * exp(S_qj / T) / sum_q' exp(S_q'j / T); rows are the queries."""
    E = np.exp(S / T)
    return S * E / E.sum(axis=0, keepdims=True)


def inverted_softmax(S: np.ndarray, beta: float) -> np.ndarray:
    """S'_qj = exp(beta S_qj) / sum_q' exp(beta S_q'j)."""
    E = np.exp(beta * S)
    return E / E.sum(axis=0, keepdims=True)


def first_best(row) -> list[int]:
    """Gallery indices best first, ties in gallery order."""
    return sorted(range(len(row)), key=lambda j: (-row[j], j))


def qb_norm(S: np.ndarray, bank: np.ndarray, beta: float, k: int) -> tuple[np.ndarray, list]:
    """The dynamic inverted softmax over a bank (rows of `bank` = bank queries, same gallery)."""
    Z = np.exp(beta * bank).sum(axis=0)
    activation = {j for row in bank for j in first_best(row)[:k]}
    active = [first_best(row)[0] in activation for row in S]
    out = S.copy()
    for q in range(len(S)):
        if active[q]:
            out[q] = np.exp(beta * S[q]) / Z
    return out, active


def oracle_topk(S: np.ndarray, revised: np.ndarray, topk) -> tuple[np.ndarray, list]:
    """The ranking matrix of "top-k re-ordered by S', kept above the rest": each row's cosine
    top-k gets 3 - position / k in the order by S' (ties in gallery order), the rest keeps S."""
    out = S.copy()
    tops = []
    for q, row in enumerate(S):
        k = len(row) if topk is None else min(topk, len(row))
        top = first_best(row)[:k]
        for position, j in enumerate(sorted(top, key=lambda j: (-revised[q, j], j))):
            out[q, j] = 3.0 - position / k
        tops.append(top)
    return out, tops


def revise(name: str, S: np.ndarray, cfg: BaselineConfig, bank=None) -> np.ndarray:
    if name == "dual-softmax":
        return dual_softmax(S, cfg.temperature)
    if name == "inverted-softmax":
        return inverted_softmax(S, cfg.beta)
    return qb_norm(S, bank, cfg.beta, cfg.activation_topk)[0]


# ----------------------------------------------------------------------------- the data
class Split:
    def __init__(self, text, audio, audio_index, bank_text, bank_audio):
        self.text, self.audio, self.audio_index = text, audio, audio_index
        self.bank_text, self.bank_audio = bank_text, bank_audio
        t, a = unit(text), unit(audio)
        bt, ba = unit(bank_text), unit(bank_audio)
        self.S = {"t2a": t @ a.T, "a2t": a @ t.T}  # queries x gallery per direction
        self.bank = {"t2a": bt @ a.T, "a2t": ba @ t.T}  # bank queries x the same gallery


def random_split(seed: int) -> Split:
    g = torch.Generator().manual_seed(seed)
    nt, na = 30, 12
    index = torch.randint(0, na - 2, (nt,), generator=g)  # clips 10, 11 have no caption
    index[[3, 17]] = -1  # captions with no clip: ranked, not scored
    return Split(
        torch.randn(nt, 8, generator=g),
        torch.randn(na, 8, generator=g),
        index,
        torch.randn(20, 8, generator=g),
        torch.randn(9, 8, generator=g),
    )


@pytest.fixture(scope="module")
def splits(tmp_path_factory) -> dict[str, Split]:
    root = tmp_path_factory.mktemp("baselines")
    caches = {}
    for name, clips, seed in (("test", 20, 1), ("train", 30, 2)):
        cfg = SyntheticConfig(n_clips=clips, captions_per_clip=(1, 2, 3), dim=D, seed=seed)
        make_synthetic(root / f"{name}.h5", cfg, split=name)
        caches[name] = load_tensors(root / f"{name}.h5")
    test, train = caches["test"], caches["train"]
    return {
        "random": random_split(0),
        "synthetic": Split(test.text, test.audio, test.audio_index, train.text, train.audio),
    }


def make(split: Split, cfg: BaselineConfig, **kw):
    bank = (split.bank_text, split.bank_audio) if cfg.name == "qb-norm" else (None, None)
    return baseline_scores(cfg.name, split.text, split.audio, cfg, *bank, **kw)


def rows(scores, direction: str, cuts) -> torch.Tensor:
    fn = scores.t2a if direction == "t2a" else scores.a2t
    return torch.cat([fn(a, b) for a, b in itertools.pairwise(cuts)])


# ----------------------------------------------------------------------------- scores
def check_values(got, S, revised, tops, log_domain, slope) -> None:
    """Outside the top-k: the cosine. Inside: a per-row shift of log S' (of -log|S'| for
    negative S') for the log-domain rows, of S' itself for raw rows (QB-Norm's inactive ones).

    The scores start from float32 cosines (error ~1e-7): log S' moves by slope_qj = |d log S' /
    dS| times that, which is large for dual softmax near S = 0 (1/|S| + 1/T), so each entry is
    held to 2e-5 + 1e-6 * slope_qj around the row's best-conditioned entry.
    """
    got = got.double().numpy()
    for q, top in enumerate(tops):
        rest = np.ones(S.shape[1], dtype=bool)
        rest[top] = False
        np.testing.assert_allclose(got[q, rest], S[q, rest], rtol=0, atol=1e-6)
        g, r = got[q, top], revised[q, top]
        assert g.min() >= 2.0 and (not rest.any() or g.min() > got[q, rest].max())
        if not log_domain[q]:
            np.testing.assert_allclose(g - r, (g - r)[0], rtol=0, atol=2e-6)
            continue
        tol = 2e-5 + 1e-6 * slope[q, top]
        pos, neg = r > 0, r < 0
        assert pos.any() or neg.any()
        for part, sign in ((pos, 1.0), (neg, -1.0)):
            if part.any():
                d = g[part] - sign * np.log(np.abs(r[part]))
                ref = np.argmin(tol[part])
                assert (np.abs(d - d[ref]) <= tol[part] + tol[part][ref]).all(), (q, d)
        if pos.any() and neg.any():
            assert g[pos].min() > g[neg].max()


def slope_of(name: str, S: np.ndarray, cfg: BaselineConfig) -> np.ndarray:
    if name == "dual-softmax":
        return 1.0 / np.abs(S) + 1.0 / cfg.temperature
    return np.full_like(S, cfg.beta)


CASES = [
    (name, topk, data)
    for name in BASELINES
    for topk in (5, None)
    for data in ("random", "synthetic")
]


@pytest.mark.parametrize(("name", "topk", "data"), CASES)
def test_scores_equal_the_dense_oracle_for_any_blocks(splits, name, topk, data) -> None:
    split = splits[data]
    cfg = BaselineConfig(name=name, topk=topk, temperature=0.05)
    nt, na = len(split.text), len(split.audio)
    cuts = {"t2a": [[0, nt], [0, 1, 9, 10, nt]], "a2t": [[0, na], [0, 4, 5, na]]}
    first = {}
    for query_block, max_elements in ((64, 1 << 22), (1, 7), (3, 40)):
        scores = make(split, replace(cfg, query_block=query_block), max_elements=max_elements)
        for direction, splits_ in cuts.items():
            S = split.S[direction]
            revised = revise(name, S, cfg, split.bank[direction])
            _, tops = oracle_topk(S, revised, topk)
            if name == "qb-norm":
                log_domain = qb_norm(S, split.bank[direction], cfg.beta, cfg.activation_topk)[1]
            else:
                log_domain = [True] * len(S)
            for c in splits_:
                got = rows(scores, direction, c)
                assert got.dtype == torch.float32
                check_values(got, S, revised, tops, log_domain, slope_of(name, S, cfg))
                # A row's float32 cosines may differ by an ulp between matmul shapes (a block
                # of 1 row is a gemv), and 1/T or beta multiplies that by up to 100.
                ref = first.setdefault(direction, got)
                torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", BASELINES)
@pytest.mark.parametrize("topk", [5, None])
def test_paper_metrics_equal_the_oracles_ranking(splits, name, topk) -> None:
    for data, split in splits.items():
        cfg = BaselineConfig(name=name, topk=topk)
        index = split.audio_index.tolist()
        dense = {}
        for direction in ("t2a", "a2t"):
            S = split.S[direction]
            dense[direction] = oracle_topk(S, revise(name, S, cfg, split.bank[direction]), topk)[0]
        want = {k: v for k, v in oracle_paper(dense["t2a"], index).items() if k[:3] == "t2a"}
        want |= {k: v for k, v in oracle_paper(dense["a2t"].T, index).items() if k[:3] == "a2t"}
        scores = make(split, cfg)
        for max_elements in (40, 1 << 22):
            got = paper_protocol(scores, split.audio_index, max_elements=max_elements)
            assert got == pytest.approx(want, abs=1e-9), data
        if topk is None:  # the whole gallery re-ranked: not the cosine baseline's numbers
            cosine = paper_protocol(CosineScores(split.text, split.audio), split.audio_index)
            assert got != pytest.approx(cosine, abs=1e-9)


def test_dual_softmax_keeps_order_where_s_prime_spans_hundreds_of_decades(splits) -> None:
    """At T = 0.003, |S'| runs below 1e-150: S' itself in float32 would tie, the scores don't."""
    split = splits["synthetic"]
    cfg = BaselineConfig(name="dual-softmax", topk=None, temperature=0.003)
    S = split.S["t2a"]
    revised = dual_softmax(S, cfg.temperature)
    assert np.abs(revised[revised != 0]).min() < 1e-150
    ties = [len(set((2.0 + revised[q]).astype(np.float32))) < S.shape[1] for q in range(len(S))]
    assert all(ties)  # what TopKScores' replace shift would make of a float32 S'
    got = make(split, cfg).t2a(0, len(S)).double().numpy()
    for q in range(len(S)):
        assert first_best(got[q]) == first_best(revised[q])


def test_qb_norm_normalises_only_queries_whose_top1_the_bank_reaches(splits) -> None:
    split = splits["random"]
    for k in (1, 2):  # argmax, then the stable sort's top-k
        cfg = BaselineConfig(name="qb-norm", topk=None, activation_topk=k)
        scores = make(split, cfg)
        for direction in ("t2a", "a2t"):
            S = split.S[direction]
            revised, active = qb_norm(S, split.bank[direction], cfg.beta, k)
            assert any(active) and not all(active), (k, direction, active)  # both ways
            fn = scores.t2a if direction == "t2a" else scores.a2t
            got = fn(0, len(S)).double().numpy()
            for q, a in enumerate(active):
                assert first_best(got[q]) == first_best(revised[q] if a else S[q])
            tops = oracle_topk(S, revised, None)[1]
            slope = slope_of("qb-norm", S, cfg)
            check_values(torch.from_numpy(got), S, revised, tops, active, slope)


# ----------------------------------------------------------------------------- refusals
def test_bad_settings_are_refused(splits) -> None:
    split = splits["random"]
    for bad, match in (
        (dict(name="csls"), "baseline must be one of"),
        (dict(topk=0), "top-k must be at least 1"),
        (dict(temperature=0.0), "temperature must be positive"),
        (dict(beta=-1.0), "beta must be positive"),
        (dict(activation_topk=0), "at least 1"),
    ):
        with pytest.raises(ValueError, match=match):
            BaselineConfig(**bad).check()
    with pytest.raises(ValueError, match="baseline must be one of"):
        baseline_scores("csls", split.text, split.audio, BaselineConfig())
    with pytest.raises(ValueError, match="needs a query bank"):
        baseline_scores("qb-norm", split.text, split.audio, BaselineConfig(), split.bank_text)


def test_the_name_picks_the_baseline_and_only_qb_norm_reads_the_bank(splits) -> None:
    """One factory call fits all three: the bank is ignored where it has no meaning."""
    split = splits["random"]
    bank = (split.bank_text, split.bank_audio)
    cfg = BaselineConfig(name="qb-norm", topk=None)  # its name is overridden by the argument
    for name in ("dual-softmax", "inverted-softmax"):
        with_bank = baseline_scores(name, split.text, split.audio, cfg, *bank)
        without = make(split, replace(cfg, name=name))
        torch.testing.assert_close(with_bank.t2a(0, 30), without.t2a(0, 30), rtol=0, atol=0)
        assert not torch.equal(with_bank.t2a(0, 30), make(split, cfg).t2a(0, 30))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("baselines_cli")
    paths = {n: root / f"{n}.h5" for n in ("test", "train", "train32", "backbone")}
    for name, clips, dim, seed in (("test", 20, D, 1), ("train", 30, D, 2), ("train32", 30, 32, 2)):
        cfg = SyntheticConfig(n_clips=clips, captions_per_clip=(1, 2, 3), dim=dim, seed=seed)
        make_synthetic(paths[name], cfg, split=name)
    g = np.random.default_rng(0)
    with CacheWriter(paths["backbone"], dataset="x", split="train", space="backbone") as w:
        w.add_audio(["a", "b"], g.standard_normal((2, 24), dtype=np.float32))
        w.add_text(["c0", "c1"], [0, 1], g.standard_normal((2, D), dtype=np.float32))
    return paths


def test_evaluate_baseline_refuses_a_missing_or_misfit_bank(files) -> None:
    qb = BaselineConfig(name="qb-norm")
    with pytest.raises(UserError, match="--bank TRAIN_CACHE"):
        evaluate_baseline(files["test"], qb)
    with pytest.raises(UserError, match="a bank is for qb-norm"):
        evaluate_baseline(files["test"], BaselineConfig(), bank_path=files["train"])
    with pytest.raises(UserError, match=r"train32\.h5: a 32-d query bank for a 16-d split"):
        evaluate_baseline(files["test"], qb, bank_path=files["train32"])
    with pytest.raises(UserError, match=r"backbone\.h5: .* joint-space"):
        evaluate_baseline(files["test"], qb, bank_path=files["backbone"])
    with pytest.raises(UserError, match=r"nope\.h5"):
        evaluate_baseline(files["test"], qb, bank_path=files["test"].with_name("nope.h5"))
    with pytest.raises(UserError, match="baseline must be one of"):
        evaluate_baseline(files["test"], BaselineConfig(name="csls"))


# ----------------------------------------------------------------------------- the CLI
def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_cli_baseline_prints_both_rankings_and_writes_json(files, tmp_path) -> None:
    test, train = load_tensors(files["test"]), load_tensors(files["train"])
    for name, extra in (
        ("dual-softmax", ["--dsl-temperature", "0.05"]),
        ("inverted-softmax", ["--topk", "all", "--beta", "10"]),
        ("qb-norm", ["--bank", files["train"], "--topk", "6"]),
    ):
        out = tmp_path / f"{name}.json"
        result = run("evaluate", files["test"], "--baseline", name, *extra, "--json", out)
        assert result.exit_code == 0, result.output
        table = [line.split()[:2] for line in result.output.splitlines()]
        for system, direction in itertools.product(("cosine", name), ("t2a", "a2t")):
            assert [system, direction] in table, result.output
        payload = json.loads(out.read_text())
        assert set(payload) == {"cosine", name}
        cfg = BaselineConfig(**payload[name]["counts"]["baseline"]["config"])
        bank = (train.text, train.audio) if name == "qb-norm" else (None, None)
        scores = baseline_scores(name, test.text, test.audio, cfg, *bank)
        want = paper_protocol(scores, test.audio_index)
        assert payload[name]["metrics"] == pytest.approx(want, abs=1e-9)
        assert payload[name]["ranking"] == name
    assert cfg.topk == 6 and payload[name]["counts"]["baseline"]["bank_captions"] == len(train.text)


def test_cli_dcase_submission_is_the_baselines_ranking(files, tmp_path) -> None:
    sub = tmp_path / "sub.csv"
    args = ["evaluate", files["test"], "--protocol", "dcase", "--submission", sub]
    result = run(*args, "--baseline", "inverted-softmax", "--topk", "all")
    assert result.exit_code == 0, result.output
    assert sub.is_file() and "inverted-softmax  t2a" in result.output


def test_cli_refusals(files) -> None:
    def usage(*args, fragment):
        result = run("evaluate", files["test"], *args)
        assert result.exit_code == 2, result.output
        assert fragment in result.output, result.output

    usage("--bank", files["train"], fragment="--bank applies only with --baseline NAME")
    usage("--topk", "8", "--seed", "3", fragment="--topk, --seed apply only with --head")
    usage(
        "--baseline",
        "dual-softmax",
        "--alpha",
        "2",
        fragment="--alpha applies only with --head CHECKPOINT",
    )
    usage("--baseline", "dual-softmax", "--beta", "3", fragment="--beta does not apply")
    usage("--baseline", "qb-norm", "--dsl-temperature", "1", fragment="--dsl-temperature does not")
    usage("--baseline", "dual-softmax", "--bank", files["train"], fragment="--bank does not apply")
    usage("--baseline", "dual-softmax", "--head", "h.pt", fragment="--head and --baseline")
    usage("--baseline", "dual-softmax", "--topk", "0", fragment="--topk")
    usage("--baseline", "csls", fragment="csls")
    result = run("evaluate", files["test"], "--baseline", "qb-norm")
    assert result.exit_code == 1 and result.output.startswith("Error: qb-norm normalises")
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    result = run("evaluate", files["test"], "--baseline", "qb-norm", "--bank", files["train32"])
    assert result.exit_code == 1 and "train32.h5: a 32-d query bank" in result.output


def test_cli_choices_are_the_baselines() -> None:
    option = next(p for p in main.commands["evaluate"].params if p.name == "baseline")
    assert tuple(option.type.choices) == BASELINES
