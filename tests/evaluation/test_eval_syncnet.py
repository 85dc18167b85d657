"""SyncNet LSE-C/LSE-D: network layout, offset search semantics, MFCC framing, face crop."""

import numpy as np
import pytest
import torch

from emoportrait.errors import EMOError
from emoportrait.evaluation.syncnet import (
    SYNCNET_WEIGHTS_NAME,
    SyncNet,
    crop_faces,
    load_syncnet,
    offset_scores,
    sync_scores,
    syncnet_mfcc,
)


def test_offset_search_finds_shift_and_confidence():
    torch.manual_seed(0)
    t, k = 60, 3
    aud = torch.randn(t + 20, 64)
    lip = aud[10 - k:10 - k + t]  # lips at t match the audio k frames earlier
    s = offset_scores(lip, aud[10:10 + t])
    assert s.offset == k
    assert s.distance < 1 and s.confidence > 5  # only the first k frames meet the zero padding
    unrelated = offset_scores(torch.randn(t, 64), aud[:t])
    assert unrelated.confidence < 0.5 * s.confidence and unrelated.distance > 5


def test_mfcc_is_100hz_13_coefficients():
    audio = (np.random.default_rng(0).standard_normal(16000) * 0.1).astype(np.float32)
    m = syncnet_mfcc(audio)
    assert m.shape[0] == 13 and abs(m.shape[1] - 100) <= 1


def test_crop_follows_the_face_box():
    frames = np.zeros((5, 200, 300, 3), np.uint8)
    frames[:, 50:150, 100:200] = 255  # the "face"
    boxes = np.tile([100, 50, 200, 150], (5, 1))
    crops = crop_faces(frames, boxes)
    assert crops.shape == (5, 224, 224, 3)
    # Box half-size 50: rows cy-50 .. cy+90 and cols cx-70 .. cx+70, so the face fills the top-centre.
    assert crops[0, 10:150, 60:160].mean() > 250 and crops[0, 200:, :].mean() < 5
    edge = crop_faces(frames, np.tile([0, 0, 100, 100], (5, 1)))
    assert (edge[0, :20, :20] == 110).all()  # grey padding outside the frame


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / SYNCNET_WEIGHTS_NAME
    torch.save(SyncNet().state_dict(), path)
    return path


def test_stand_in_weights_and_scores(weights_file, tmp_path):
    net = load_syncnet(weights_file.parent)
    state = torch.load(weights_file, weights_only=True)
    assert state["netcnnlip.0.weight"].shape == (96, 3, 5, 7, 7)
    assert state["netcnnaud.18.weight"].shape == (512, 256, 5, 4)
    assert state["netfcaud.3.weight"].shape == (1024, 512)
    crops = np.random.default_rng(0).integers(0, 256, (12, 224, 224, 3), dtype=np.uint8)
    audio = np.random.default_rng(1).standard_normal(12 * 640).astype(np.float32) * 0.1
    s = sync_scores(net, crops, audio)
    assert np.isfinite(s.confidence) and s.confidence >= 0 and s.distance > 0 and -15 <= s.offset <= 15
    with pytest.raises(EMOError, match="too short"):
        sync_scores(net, crops[:5], audio)
    prefixed = {"__S__." + k: v for k, v in state.items()}  # SyncNetInstance-saved files
    torch.save(prefixed, tmp_path / SYNCNET_WEIGHTS_NAME)
    load_syncnet(tmp_path / SYNCNET_WEIGHTS_NAME)
    del state["netfclip.0.weight"]
    torch.save(state, tmp_path / SYNCNET_WEIGHTS_NAME)
    with pytest.raises(EMOError, match="missing 1 .e.g. netfclip.0.weight"):
        load_syncnet(tmp_path)
