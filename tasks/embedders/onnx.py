"""The ``onnx:PATH`` embedder: an ONNX face model (e.g. InsightFace ArcFace) run by onnxruntime, on the CPU or, for a
job that asked for a GPU where onnxruntime's CUDA provider is installed (``onnxruntime-gpu``), on the GPU."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from storage.errors import InputError
from tasks.embedders.faces import FaceCropper
from tasks.embedders.preprocess import preprocess


class OnnxEmbedder:
    """``onnxruntime.InferenceSession(path, providers=...)`` with ``threads`` intra-op threads and 1 inter-op
    thread; providers: ``["CPUExecutionProvider"]``, or with ``gpu`` and the CUDA provider available
    ``CUDAExecutionProvider`` first (TensorFloat-32 off, so its float32 products stay float32) and the CPU's.
    Input layout from the model's first input: (n, 3, h, w) -> NCHW, (n, h, w, 3)
    -> NHWC; features = ``output`` (default the first output), flattened per image."""

    def __init__(self, path: str, config: Mapping, threads: int = 1, gpu: bool = False) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise InputError("onnx:PATH models need onnxruntime: pip install -e '.[faces]'") from None
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        providers: list = ["CPUExecutionProvider"]
        if gpu and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, ("CUDAExecutionProvider", {"use_tf32": "0"}))
        try:
            self.session = ort.InferenceSession(path, sess_options=opts, providers=providers)
        except Exception as exc:  # noqa: BLE001 - every loader failure is a bad model file
            raise InputError(f"{path}: the ONNX model does not load ({type(exc).__name__}: "
                             f"{str(exc).strip()[:300]}); expected an .onnx model file") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise InputError(f"{path}: the model has {len(inputs)} inputs; expected one image input")
        self.input = inputs[0]
        shape = [d if isinstance(d, int) else None for d in self.input.shape]
        if len(shape) != 4 or 3 not in (shape[1], shape[3]):
            raise InputError(f"{path}: input {self.input.name!r} has shape {self.input.shape}; expected RGB images "
                             f"(n, 3, h, w) or (n, h, w, 3)")
        self.nchw = shape[1] == 3
        self.one_at_a_time = shape[0] == 1  # a model exported with a fixed batch of 1
        if "float" not in self.input.type:
            raise InputError(f"{path}: input {self.input.name!r} has type {self.input.type}; expected a float tensor")
        self.dtype = np.float16 if "float16" in self.input.type else (
            np.float64 if "double" in self.input.type else np.float32)
        hw = (shape[2], shape[3]) if self.nchw else (shape[1], shape[2])
        from tasks.embedders import input_size

        self.size = input_size(config, hw, path)
        if (hw[0] and hw[0] != self.size[0]) or (hw[1] and hw[1] != self.size[1]):
            raise InputError(f"{path}: input_size {list(self.size)} differs from the model's input {hw[0]}x{hw[1]}")
        outputs = [o.name for o in self.session.get_outputs()]
        wanted = config.get("output", "")
        if wanted and wanted not in outputs:
            raise InputError(f"{path}: the model has no output {wanted!r}; its outputs are {', '.join(outputs)}")
        self.output = wanted or outputs[0]
        out_shape = next(o.shape for o in self.session.get_outputs() if o.name == self.output)
        dims = [d for d in out_shape[1:]]
        self.dim = int(np.prod(dims)) if all(isinstance(d, int) for d in dims) else 0
        self.mode = config.get("preprocess", "arcface")
        self.crop = FaceCropper(config.get("align", "arcface"), self.size, config.get("upsample", 1),
                                config.get("padding", 0.25), config.get("detect_max_side", 0))

    def embed(self, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        chips, detected = zip(*(self.crop(img) for img in images)) if images else ((), ())
        if not chips:
            return np.zeros((0, self.dim), dtype=np.float32), np.zeros(0, dtype=bool)
        x = preprocess(np.stack(chips), self.mode)
        if self.nchw:
            x = x.transpose(0, 3, 1, 2)
        x = np.ascontiguousarray(x, dtype=self.dtype)
        if self.one_at_a_time:
            out = np.concatenate([self.session.run([self.output], {self.input.name: x[i:i + 1]})[0]
                                  for i in range(len(x))])
        else:
            out = self.session.run([self.output], {self.input.name: x})[0]
        return np.asarray(out, dtype=np.float32).reshape(len(chips), -1), np.array(detected, dtype=bool)
