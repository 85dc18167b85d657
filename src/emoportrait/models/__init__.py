"""EMO's networks (paper section 3.2), one file each, built on diffusers and transformers."""

from emoportrait.models.audio import AudioProjection, LogMelAudioEncoder, Wav2Vec2AudioEncoder, audio_windows
from emoportrait.models.backbone import EMOTemporalModule, EMOUNet, parameter_groups, spatial_layer_names
from emoportrait.models.build import build_components
from emoportrait.models.config import ModelConfig, load_model_config
from emoportrait.models.face_locator import FaceLocator
from emoportrait.models.reference_net import EMOReferenceNet
from emoportrait.models.speed import SpeedEncoder, speed_to_buckets

__all__ = [
    "AudioProjection", "EMOReferenceNet", "EMOTemporalModule", "EMOUNet", "FaceLocator", "LogMelAudioEncoder",
    "ModelConfig", "SpeedEncoder", "Wav2Vec2AudioEncoder", "audio_windows", "build_components",
    "load_model_config", "parameter_groups", "spatial_layer_names", "speed_to_buckets",
]
