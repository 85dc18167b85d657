"""Report writing: metrics.json keys, nulls with reasons, markdown/HTML, plots, contact sheets."""

import json

import numpy as np

from emoportrait.evaluation.report import METRIC_KEYS, EvalReport


def test_report_files_and_nulls(tmp_path):
    rep = EvalReport()
    rep.set("fid", 12.5, samples_generated=10)
    rep.set("fvd", None, "FVD: weights file w/i3d_torchscript.pt not found; put i3d_torchscript.pt in the --weights folder")
    rep.set("f_sim", 0.8, ground_truth=0.82)
    rep.set("seam", float("nan"))
    rep.per_video = {"a": {"f_sim": 0.8, "f_sim_gt": 0.82, "lipsync_r": 0.9}, "b": {"f_sim": 0.7, "lipsync_r": None}}
    rep.curves = {"a": {"ground truth": [0, 1, 0.5], "generated (measured)": [0.1, 0.9, 0.4]}}
    frames = np.zeros((3, 64, 48, 3), np.uint8)
    rep.sheets = {"a": (frames, frames + 200)}
    rep.note("b.mp4: has no audio stream")
    out = rep.write(tmp_path / "report")
    data = json.loads((out / "metrics.json").read_text())
    assert all(k in data for k in METRIC_KEYS)
    assert data["fid"] == 12.5 and data["fvd"] is None and "i3d_torchscript.pt" in data["unavailable"]["fvd"]
    assert data["seam"] is None and "non-finite" in data["unavailable"]["seam"]
    assert set(data["unavailable"]) == {k for k in METRIC_KEYS if data[k] is None}
    assert data["details"]["f_sim"]["ground_truth"] == 0.82
    for f in ("report.md", "report.html", "plots/per_video.png", "plots/mouth_curves.png", "sheets/a.jpg"):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    md = (out / "report.md").read_text()
    assert "n/a: FVD: weights file" in md and "b.mp4: has no audio stream" in md and "plots/mouth_curves.png" in md
    # Rewriting replaces the folder atomically, leaving no temporary siblings.
    rep.write(tmp_path / "report")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]
