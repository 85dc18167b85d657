"""emoportrait: EMO (Emote Portrait Alive) audio-to-video diffusion."""

__version__ = "0.1.0"

__all__ = ["EMOPipeline", "__version__"]

# The networks are importable from the top level too (`from emoportrait import EMOUNet`).
_MODEL_CLASSES = ("EMOUNet", "EMOReferenceNet", "FaceLocator", "LogMelAudioEncoder", "Wav2Vec2AudioEncoder",
                  "AudioProjection", "SpeedEncoder")


def __getattr__(name):
    # Import lazily so `emoportrait --help` and the data tools do not pay for torch/diffusers.
    if name == "EMOPipeline":
        from emoportrait.pipelines.pipeline_emo import EMOPipeline

        return EMOPipeline
    if name in _MODEL_CLASSES:
        from emoportrait import models

        return getattr(models, name)
    raise AttributeError(f"module 'emoportrait' has no attribute {name!r}")
