"""The ``keras:PATH`` embedder: a saved Keras model, optionally cut at a named layer, on face chips."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from storage.errors import InputError
from tasks.embedders.faces import FaceCropper
from tasks.embedders.preprocess import preprocess


class KerasEmbedder:
    """``keras.saving.load_model(path, compile=False)``; features = the output of ``layer`` (default: the
    model's output), flattened per image; input = chips of ``input_size`` (:class:`.faces.FaceCropper`)
    preprocessed by ``preprocess``; run with ``predict_on_batch``, on TensorFlow's first GPU with ``gpu`` (when
    it sees one), else on its CPU (also where a GPU exists: a job that did not ask for it leaves it alone)."""

    def __init__(self, path: str, config: Mapping, threads: int = 1, gpu: bool = False) -> None:
        from tasks.runtime import limit_threads, tensorflow_device

        limit_threads(threads)  # before TensorFlow starts: its pools read the limit once
        try:
            import keras
        except ImportError:
            raise InputError("keras:PATH models need Keras and TensorFlow (biasgrid's own dependencies)") from None
        self.device = lambda: tensorflow_device(gpu)
        try:
            with self.device():
                model = keras.saving.load_model(path, compile=False)
        except Exception as exc:  # noqa: BLE001 - every loader failure is a bad model file
            raise InputError(f"{path}: the Keras model does not load ({type(exc).__name__}: "
                             f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}); expected a model "
                             f"saved with model.save('*.keras') or a legacy .h5 file") from None
        layer_name = config.get("layer", "")
        if layer_name:
            names = [layer.name for layer in model.layers]
            if layer_name not in names:
                raise InputError(f"{path}: the model has no layer {layer_name!r}; its layers are "
                                 f"{', '.join(names)}")
            try:
                model = keras.Model(inputs=model.inputs, outputs=model.get_layer(layer_name).output)
            except Exception as exc:  # noqa: BLE001
                raise InputError(f"{path}: cannot take the output of layer {layer_name!r} ({exc})") from None
        shape = tuple(model.inputs[0].shape) if getattr(model, "inputs", None) else None
        if shape is None or len(shape) != 4 or shape[-1] != 3:
            raise InputError(f"{path}: model input has shape {shape}; expected RGB images (batch, height, width, 3)")
        from tasks.embedders import input_size

        self.size = input_size(config, (shape[1], shape[2]), path)
        if (shape[1] and shape[1] != self.size[0]) or (shape[2] and shape[2] != self.size[1]):
            raise InputError(f"{path}: input_size {list(self.size)} differs from the model's input "
                             f"{shape[1]}x{shape[2]}")
        self.model = model
        self.mode = config["preprocess"]
        self.crop = FaceCropper(config.get("align", "none"), self.size, config.get("upsample", 1),
                                config.get("padding", 0.25), config.get("detect_max_side", 0))
        out = model.outputs[0].shape
        self.dim = int(np.prod([d for d in out[1:]])) if all(out[1:]) else 0

    def embed(self, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        chips, detected = zip(*(self.crop(img) for img in images)) if images else ((), ())
        if not chips:
            return np.zeros((0, self.dim), dtype=np.float32), np.zeros(0, dtype=bool)
        x = preprocess(np.stack(chips), self.mode)
        with self.device():
            out = np.asarray(self.model.predict_on_batch(x), dtype=np.float32)
        return out.reshape(len(chips), -1), np.array(detected, dtype=bool)
