"""emoportrait: EMO (Emote Portrait Alive) audio-to-video diffusion."""

__version__ = "0.1.0"

__all__ = ["EMOPipeline", "__version__"]


def __getattr__(name):
    # Import lazily so `emoportrait --help` and the data tools do not pay for torch/diffusers.
    if name == "EMOPipeline":
        from emoportrait.pipelines.pipeline_emo import EMOPipeline

        return EMOPipeline
    raise AttributeError(f"module 'emoportrait' has no attribute {name!r}")
