"""`emoportrait train` end to end on real shards, and every bad input: one line, exit 2, nothing overwritten."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from train_fixtures import write_shards

from emoportrait.cli import main

CONFIGS = Path(__file__).parents[2] / "configs"
FAST = ["--batch_size=2", "--checkpoint.every=1", "--optim.warmup_steps=0", "--data.options={samples_per_clip: 1}"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("shards") / "train")


@pytest.fixture(scope="module")
def stage1_run(tiny_model_dir, shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "s1"
    rc = main(["train", "--config", str(CONFIGS / "tiny" / "stage1.yaml"), "--data", str(shards),
               "--init", str(tiny_model_dir), "--output-dir", str(out), "--max-steps", "2", *FAST])
    assert rc == 0
    return out


def _one_line_error(capsys, rc, *needles):
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("emoportrait train: error:"), err
    for n in needles:
        assert n in err, err
    return err


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_cli_trains_stage1_then_stage2_into_loadable_model_folders(stage1_run, shards, tmp_path):
    from emoportrait.pipelines import EMOPipeline

    assert json.loads((stage1_run / "model" / "emo_training.json").read_text())["stages"] == ["1"]
    ckpt = stage1_run / "checkpoints" / "checkpoint-000002"
    assert (ckpt / "config.yaml").read_text() == (stage1_run / "config.yaml").read_text()
    out = tmp_path / "s2"
    rc = main(["train", "--config", str(CONFIGS / "tiny" / "stage2.yaml"), "--data", str(shards),
               "--init", str(stage1_run / "model"), "--output-dir", str(out), "--max-steps", "1", *FAST])
    assert rc == 0
    EMOPipeline.from_pretrained(str(out / "model"))
    assert json.loads((out / "model" / "emo_training.json").read_text())["stages"] == ["1", "2"]


def test_missing_shards(tiny_model_dir, tmp_path, capsys):
    rc = main(["train", "--stage", "1", "--data", str(tmp_path / "nope"), "--init", str(tiny_model_dir),
               "--output-dir", str(tmp_path / "out")])
    _one_line_error(capsys, rc, "shards folder not found")
    assert not (tmp_path / "out").exists()


def test_empty_dataset(tiny_model_dir, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "manifest.json").write_text(json.dumps({"config": {"size": 32}, "shards": [], "clips": [], "complete": True}))
    rc = main(["train", "--stage", "1", "--data", str(empty), "--init", str(tiny_model_dir), "--output-dir", str(tmp_path / "out")])
    _one_line_error(capsys, rc, str(empty))
    assert not (tmp_path / "out").exists()


def test_unknown_config_key_in_yaml(tiny_model_dir, shards, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("stage: 1\noptim:\n  learning_rate: 0.1\n")
    rc = main(["train", "--config", str(bad), "--data", str(shards), "--init", str(tiny_model_dir), "--output-dir", str(tmp_path / "out")])
    _one_line_error(capsys, rc, "unknown config key optim.learning_rate")


def test_unknown_config_key_on_command_line_is_refused(tiny_model_dir, shards, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--stage", "1", "--data", str(shards), "--init", str(tiny_model_dir), "--output-dir",
              str(tmp_path / "out"), "--optim.learning_rate=0.1"])
    assert e.value.code == 2
    assert "--optim.learning_rate=0.1" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_bad_value_and_stage_mismatch(tiny_model_dir, shards, tmp_path, capsys):
    args = ["--data", str(shards), "--init", str(tiny_model_dir), "--output-dir", str(tmp_path / "out")]
    _one_line_error(capsys, main(["train", "--stage", "1", *args, "--optim.lr=fast"]), "optim.lr expects float")
    _one_line_error(capsys, main(["train", "--config", str(CONFIGS / "tiny" / "stage2.yaml"), "--stage", "3", *args]),
                    "stage-2 config")


def test_stage2_without_stage1_model(tiny_model_dir, shards, tmp_path, capsys):
    rc = main(["train", "--config", str(CONFIGS / "tiny" / "stage2.yaml"), "--data", str(shards), "--init", str(tiny_model_dir),
               "--output-dir", str(tmp_path / "out")])
    _one_line_error(capsys, rc, "stage 2 starts from a stage-1 model", "--force")
    assert not (tmp_path / "out").exists()


def test_existing_run_needs_resume(stage1_run, tiny_model_dir, shards, capsys):
    before = _snapshot(stage1_run)
    rc = main(["train", "--stage", "1", "--data", str(shards), "--init", str(tiny_model_dir), "--output-dir", str(stage1_run)])
    _one_line_error(capsys, rc, "--resume latest")
    assert _snapshot(stage1_run) == before


def test_corrupt_checkpoint_on_resume_overwrites_nothing(stage1_run, tiny_model_dir, shards, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(stage1_run, run)
    weights = run / "checkpoints" / "checkpoint-000002" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    before = _snapshot(run)
    rc = main(["train", "--config", str(CONFIGS / "tiny" / "stage1.yaml"), "--data", str(shards), "--init", str(tiny_model_dir),
               "--output-dir", str(run), "--max-steps", "3", "--resume", "latest", *FAST])
    _one_line_error(capsys, rc, "corrupt", "model.safetensors")
    assert _snapshot(run) == before


def test_resume_continues_to_more_steps(stage1_run, tiny_model_dir, shards, tmp_path):
    import shutil

    from emoportrait.training.logging import read_log

    run = tmp_path / "run"
    shutil.copytree(stage1_run, run)
    rc = main(["train", "--config", str(CONFIGS / "tiny" / "stage1.yaml"), "--data", str(shards), "--init", str(tiny_model_dir),
               "--output-dir", str(run), "--max-steps", "3", "--resume", "latest", *FAST])
    assert rc == 0
    assert [r["step"] for r in read_log(run / "log.jsonl")] == [1, 2, 3]
    assert json.loads((run / "model" / "emo_training.json").read_text())["steps"] == {"1": 3}


def test_mouth_loss_weight_reaches_the_stage2_loss(stage1_run, shards, tmp_path):
    """Same init, data order and noise: only the mouth region's weight differs, so the first loss does."""
    losses = {}
    for weight in ("0", "4"):
        out = tmp_path / f"w{weight}"
        rc = main(["train", "--config", str(CONFIGS / "tiny" / "stage2.yaml"), "--data", str(shards), "--init",
                   str(stage1_run / "model"), "--output-dir", str(out), "--max-steps", "1", *FAST,
                   f"--mouth_loss_weight={weight}", "--snr_gamma=0"])
        assert rc == 0
        losses[weight] = json.loads((out / "log.jsonl").read_text().splitlines()[0])["loss"]
    assert losses["0"] != losses["4"]


def test_face_loss_weight_reaches_the_stage1_loss(tiny_model_dir, shards, tmp_path):
    """Same init, data order and noise: only the face region's weight differs, so the first loss does."""
    losses = {}
    for weight in ("0", "2"):
        out = tmp_path / f"w{weight}"
        rc = main(["train", "--config", str(CONFIGS / "tiny" / "stage1.yaml"), "--data", str(shards), "--init",
                   str(tiny_model_dir), "--output-dir", str(out), "--max-steps", "1", *FAST,
                   f"--face_loss_weight={weight}", "--snr_gamma=0"])
        assert rc == 0
        losses[weight] = json.loads((out / "log.jsonl").read_text().splitlines()[0])["loss"]
    assert losses["0"] != losses["2"]
