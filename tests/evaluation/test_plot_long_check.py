"""scripts/plot_long_check.py: the figure of a long check's reading (docs/images/long_check_12.png)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "plot_long_check.py"


@pytest.fixture(scope="module")
def plot_long_check(load_script):
    return load_script("plot_long_check")


def _long(videos: int, control: bool) -> dict:
    rng = np.random.default_rng(0)
    rows = []
    for k in range(videos):
        v = {"jitter_growth": float(rng.normal(0, 0.05)), "clip_jitter": list(rng.uniform(0.04, 0.06, 40 + k))}
        if control:
            v["no_motion"] = {"jitter_growth": float(rng.normal(0, 0.05)), "clip_jitter": list(rng.uniform(0.04, 0.06, 40))}
        rows.append(v)
    return {"videos": rows, "seconds": 20.0, "command": "python -m emoportrait.evaluation.model_checks ..."}


def test_mean_and_band_are_over_the_videos_cut_to_the_shortest(plot_long_check):
    mean, band = plot_long_check._mean_sem([[1.0, 2.0, 9.0], [3.0, 4.0]])
    np.testing.assert_allclose(mean, [2.0, 3.0])
    np.testing.assert_allclose(band, [1.0, 1.0])  # std (ddof 1) sqrt(2) / sqrt(2 videos)
    mean, band = plot_long_check._mean_sem([[0.5, 0.7]])
    np.testing.assert_allclose(mean, [0.5, 0.7])
    np.testing.assert_allclose(band, [0.0, 0.0])  # one video: no band


@pytest.mark.parametrize("control", [True, False])
def test_plot_writes_the_figure(plot_long_check, tmp_path, control):
    out = tmp_path / "sub" / "long.png"
    plot_long_check.plot(_long(3, control), out)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (1210, 440)  # 11 x 4 inches at 110 dpi
        pixels = np.asarray(im.convert("L"))
    assert pixels.std() > 5  # drawn on, not a blank canvas


def test_cli_reads_a_merged_checks_json(tmp_path):
    src = tmp_path / "checks.json"
    src.write_text(json.dumps({"lipsync": {}, "long": _long(2, True)}))
    out = tmp_path / "fig.png"
    run = subprocess.run([sys.executable, str(SCRIPT), str(src), str(out)], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str(out) and out.stat().st_size > 10_000
