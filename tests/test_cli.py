"""The command line end to end: demo, evaluate with JSON, info, help texts."""

import json

import pytest
from click.testing import CliRunner
from rerank_oracle import dense_cosine
from retrieval_oracle import oracle_paper

from diffatr.cache import SyntheticConfig, load_tensors, make_synthetic
from diffatr.cli import main


@pytest.fixture(scope="module")
def synthetic_cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "syn.h5"
    make_synthetic(path, SyntheticConfig(n_clips=60, captions_per_clip=(1, 5, 7), seed=3))
    return path


def _commands(group, prefix=()):
    for name, cmd in group.commands.items():
        yield (*prefix, name), cmd
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, (*prefix, name))


def test_every_command_and_option_is_explained():
    runner = CliRunner()
    for path, cmd in _commands(main):
        result = runner.invoke(main, [*path, "--help"])
        assert result.exit_code == 0, path
        assert cmd.help and len(cmd.help) > 20, path
        for param in cmd.params:
            if param.param_type_name == "option" and param.name != "help":
                assert param.help, f"{' '.join(path)} {param.opts} has no help"


def test_demo_runs_end_to_end_and_says_its_data_are_synthetic(tmp_path):
    """A short configuration of `diffatr demo`: phase 1 -> phase 2 -> the table -> pictures."""
    args = ["demo", "--out", str(tmp_path), "--clips", "60", "--train-clips", "80"]
    args += ["--val-clips", "20", "--no-compile"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "SYNTHETIC" in result.output
    for row in ("Dis", "Gen", "Gen+Dis", "dual-softmax", "inverted-softmax", "qb-norm"):
        assert f"\n{row} " in result.output
    payload = json.loads((tmp_path / "strategy" / "results.json").read_text())
    assert payload["protocol"] == "paper" and payload["table"] == "strategy"
    systems = {r["system"] for r in payload["records"]}
    assert {"cosine", "diffatr", "diffatr-gen", "qb-norm"} <= systems
    # The numbers against independent checks: the cosine row is the loop oracle's over the
    # projected test cache, and fusion over the top-32 leaves R@k for k >= 32 at cosine's.
    (joint,) = tmp_path.glob("runs/project-synthetic_test-*/joint.h5")
    test = load_tensors(joint)
    rows = {r["system"]: r for r in payload["records"]}
    want = oracle_paper(dense_cosine(test.text, test.audio), test.audio_index)
    for key, value in want.items():
        assert rows["cosine"]["metrics"][key] == pytest.approx(value, abs=1e-9), key
    for direction in ("t2a", "a2t"):
        fused, cosine = rows["diffatr"]["curves"][direction], rows["cosine"]["curves"][direction]
        assert fused[31:] == cosine[31:] and fused != cosine, direction
    for png in ("recall_curves_synthetic.png", "diffusion_process_synthetic.png"):
        assert (tmp_path / "strategy" / png).read_bytes()[:4] == b"\x89PNG"
        assert str(tmp_path / "strategy" / png) in result.output
    assert "diffatr ablate strategy --data clotho=" in result.output
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 1 and "already holds a demo" in again.output


def test_evaluate_writes_json_matching_the_api(synthetic_cache, tmp_path):
    from diffatr.evaluate import EvalConfig, evaluate_cache

    out = tmp_path / "new" / "folder" / "m.json"  # missing parents are created
    result = CliRunner().invoke(
        main, ["evaluate", str(synthetic_cache), "--json", str(out), "--max-elements", "100"]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(out.read_text())
    expected = evaluate_cache(synthetic_cache, EvalConfig()).metrics
    assert payload["metrics"] == pytest.approx(expected)
    assert payload["counts"]["clips"] == 60
    assert f"{expected['t2a_R@1']:.1f}" in result.output


def test_dcase_protocol_prints_the_interval(synthetic_cache, tmp_path):
    sub = tmp_path / "sub.csv"
    result = CliRunner().invoke(
        main, ["evaluate", str(synthetic_cache), "--protocol", "dcase", "--submission", str(sub)]
    )
    assert result.exit_code == 0, result.output
    assert "95% CI" in result.output and "a2t" not in result.output.split("DCASE")[1]
    from diffatr.cache import Cache

    with Cache(synthetic_cache) as cache:
        n_captions = cache.n_text
    assert len(sub.read_text().splitlines()) == 1 + n_captions


def test_info_describes_the_cache(synthetic_cache):
    result = CliRunner().invoke(main, ["cache", "info", str(synthetic_cache), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["audio"]["rows"] == 60 and info["audio"]["dim"] == 512
    assert info["captions_per_clip"]["min"] >= 1 and info["captions_per_clip"]["max"] <= 7
    text = CliRunner().invoke(main, ["cache", "info", str(synthetic_cache)])
    assert "captions per clip" in text.output and "skipped clips" not in text.output


def test_info_mentions_skipped_clips(tmp_path):
    import numpy as np

    from diffatr.cache import CacheWriter

    path = tmp_path / "x.h5"
    skipped = [{"clip_id": "gone.wav", "reason": "file not found"}, {"clip_id": "b", "reason": "r"}]
    with CacheWriter(path, dataset="d", split="test", space="backbone") as w:
        for side in ("audio", "text"):
            w.set_attrs(side, encoder="e", feature_kind="k", settings={})
        w.add_audio(["a.wav"], np.ones((1, 4), np.float32))
        w.add_text(["c"], np.array([0]), np.ones((1, 4), np.float32))
        w.set_root_attrs(skipped_clips=json.dumps(skipped), skipped_captions=7)
    text = CliRunner().invoke(main, ["cache", "info", str(path)]).output
    assert (
        "skipped clips: 2 (left out with their 7 captions), e.g. gone.wav: file not found" in text
    )


def test_synthetic_command_and_bad_options(tmp_path):
    out = tmp_path / "s.h5"
    ok = CliRunner().invoke(
        main,
        [
            "cache",
            "synthetic",
            str(out),
            "--clips",
            "20",
            "--captions-per-clip",
            "1,7",
            "--float16",
        ],
    )
    assert ok.exit_code == 0, ok.output
    bad = CliRunner().invoke(
        main, ["cache", "synthetic", str(tmp_path / "t.h5"), "--captions-per-clip", "five"]
    )
    assert bad.exit_code == 2 and "comma-separated" in bad.output
    exists = CliRunner().invoke(main, ["cache", "synthetic", str(out)])
    assert exists.exit_code == 1 and "already exists" in exists.output
    assert "Traceback" not in exists.output


def test_device_choice_is_checked(synthetic_cache):
    result = CliRunner().invoke(main, ["evaluate", str(synthetic_cache), "--device", "nonsense"])
    assert result.exit_code == 1 and "--device nonsense" in result.output


def test_an_unwritable_output_is_one_line(synthetic_cache, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = CliRunner().invoke(
        main, ["evaluate", str(synthetic_cache), "--json", str(blocker / "m.json")]
    )
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert result.output.strip().splitlines()[-1].startswith("Error: ")
