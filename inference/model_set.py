"""The node's five ONNX model files, loaded once: segmentation, consensus, motion, and the QC VAE's encoder and
decoder. Paths come from the ``[models]`` settings; an empty path takes the model shipped in inference/models/."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from inference.runtime import Device, Model, load_model, shipped_model_path

SHIPPED_FILES = {
    "segmentation": "segmentation.onnx",
    "consensus": "consensus.onnx",
    "motion": "motion.onnx",
    "qc_encoder": "qc_encoder.onnx",
    "qc_decoder": "qc_decoder.onnx",
}


@dataclass(frozen=True)
class ModelSet:
    segmentation: Model
    consensus: Model
    motion: Model
    qc_encoder: Model
    qc_decoder: Model

    @property
    def providers(self) -> dict[str, str]:
        """The provider each model really runs on."""
        return {name: getattr(self, name).providers[0] for name in SHIPPED_FILES}

    @property
    def versions(self) -> dict[str, str]:
        """Name and version of each model, as its card states them, and "int8" where the session runs the card's
        int8 copy (reports name exactly what drew their numbers)."""
        models: dict[str, Model] = {name: getattr(self, name) for name in SHIPPED_FILES}
        return {name: f"{model.card.name} {model.card.version}{' int8' if model.int8 else ''}"
                for name, model in models.items()}


def load_models(paths: dict[str, str] | None = None, *, device: Device | str = Device.AUTO,
                threads: int = 0) -> ModelSet:
    """Load (or take from the cache) every model; ``paths`` maps a model name to a site's own file."""
    chosen = paths or {}
    loaded = {
        name: load_model(Path(chosen[name]) if chosen.get(name) else shipped_model_path(file_name),
                         device=device, threads=threads)
        for name, file_name in SHIPPED_FILES.items()
    }
    return ModelSet(**loaded)
