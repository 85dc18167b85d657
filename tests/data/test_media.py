"""media: variable-frame-rate video becomes an exact 25 fps grid by timestamps; the clip layout tag round-trips."""

from fractions import Fraction

import av
import numpy as np

from emoportrait.data.media import clip_layout_tags, iter_video_frames, read_clip_layout, write_video

TIMES = [0.0, 0.03, 0.05, 0.13, 0.14, 0.30, 0.31, 0.45]  # irregular frame times (seconds)


def _vfr_video(path, times):
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=1000)
        s.width = s.height = 32
        s.pix_fmt = "yuv420p"
        s.time_base = Fraction(1, 1000)
        s.codec_context.options = {"crf": "0", "bf": "0"}
        for i, t in enumerate(times):
            img = np.full((32, 32, 3), 20 + 25 * i, np.uint8)  # frame i is grey level 20 + 25 i
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts, f.time_base = round(t * 1000), Fraction(1, 1000)
            for p in s.encode(f):
                out.mux(p)
        for p in s.encode():
            out.mux(p)



def test_variable_frame_rate_is_resampled_by_timestamps(tmp_path):
    path = tmp_path / "vfr.mp4"
    _vfr_video(path, TIMES)
    frames = list(iter_video_frames(path))
    got = [int(round((f.mean() - 20) / 25)) for f in frames]
    # Output frame k shows the last source frame whose time is <= k / 25.
    want = [max(i for i, t in enumerate(TIMES) if t <= k / 25 + 1e-9) for k in range(len(got))]
    assert got == want
    assert 11 <= len(got) <= 13  # ~0.46-0.5 s of video at 25 fps
    assert got[:5] == [0, 1, 2, 2, 4]  # at 0.00, 0.04, 0.08, 0.12, 0.16 s: frames from 0.00, 0.03, 0.05, 0.05, 0.14 s


def test_clip_layout_is_recorded_in_the_video_and_read_back(tmp_path):
    frames = np.zeros((3, 32, 32, 3), np.uint8)
    tagged, plain = tmp_path / "tagged.mp4", tmp_path / "plain.mp4"
    write_video(tagged, frames, metadata=clip_layout_tags(12, 2))
    write_video(plain, frames)
    assert read_clip_layout(tagged) == (12, 2)
    assert read_clip_layout(plain) is None  # a video emoportrait did not generate: the caller's default
    with av.open(str(plain), "w") as out:  # another tool's comment is not a layout
        out.metadata["comment"] = "clip_frames=12"
        s = out.add_stream("libx264", rate=25)
        s.width = s.height = 32
        s.pix_fmt = "yuv420p"
        for p in s.encode(av.VideoFrame.from_ndarray(frames[0], format="rgb24")):
            out.mux(p)
        for p in s.encode():
            out.mux(p)
    assert read_clip_layout(plain) is None
