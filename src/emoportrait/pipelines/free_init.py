"""FreeInit for `EMOPipeline` (Wu et al. 2023; not in the EMO paper): diffusers' `FreeInitMixin`, checked and cached.

`enable_free_init(num_iters=N, ...)` / `disable_free_init()` are diffusers' own (as on `AnimateDiffPipeline`);
the pipeline's clip loop calls `_apply_free_init` once per pass. This mixin adds what the EMO pipeline needs
around it: the settings checked before the first clip (diffusers checks none), the low-pass filter built once
per setting instead of once per clip and pass, and the number of backbone steps a clip takes.
"""

from __future__ import annotations

import torch
from diffusers.pipelines.free_init_utils import FreeInitMixin

from emoportrait.errors import EMOError

FREE_INIT_METHODS = ("butterworth", "gaussian", "ideal")  # diffusers' FreeInit low-pass filters


class EMOFreeInitMixin(FreeInitMixin):
    """diffusers' `FreeInitMixin` with checked settings, a cached filter and `steps_per_clip`."""

    def _check_free_init(self) -> None:
        """`enable_free_init`'s settings, which diffusers does not check, before any clip is generated."""
        iters = self._free_init_num_iters
        if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
            raise EMOError(f"enable_free_init: num_iters must be a positive integer, got {iters!r}")
        if self._free_init_method not in FREE_INIT_METHODS:
            raise EMOError(f"enable_free_init: method must be one of {', '.join(FREE_INIT_METHODS)}, "
                           f"got {self._free_init_method!r}")
        for name in ("spatial_stop_frequency", "temporal_stop_frequency"):
            value = getattr(self, f"_free_init_{name}")
            if not isinstance(value, (int, float)) or not 0 < value <= 1:
                raise EMOError(f"enable_free_init: {name} must be in (0, 1], got {value!r}")

    def _get_free_init_freq_filter(self, shape, device, filter_type, order, spatial_stop_frequency,
                                   temporal_stop_frequency) -> torch.Tensor:
        """diffusers' FreeInit low-pass filter, built once per setting (it loops over every frequency in
        Python: 0.35 s for a full-size clip's 12 x 64 x 64) instead of once per clip and pass."""
        key = (tuple(shape), str(device), filter_type, order, spatial_stop_frequency, temporal_stop_frequency)
        cache = self.__dict__.setdefault("_free_init_filters", {})
        if key not in cache:
            cache[key] = super()._get_free_init_freq_filter(shape, device, filter_type, order, spatial_stop_frequency,
                                                            temporal_stop_frequency)
        return cache[key]

    def steps_per_clip(self, num_inference_steps: int) -> int:
        """Backbone steps one clip takes: `num_inference_steps`, times FreeInit's passes when it is on."""
        if not self.free_init_enabled:
            return num_inference_steps
        k = self._free_init_num_iters
        if self._free_init_use_fast_sampling:  # diffusers' coarse-to-fine: pass i runs n * (i + 1) / k steps
            return sum(max(1, int(num_inference_steps / k * (i + 1))) for i in range(k))
        return num_inference_steps * k
