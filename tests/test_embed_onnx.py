"""The onnx:PATH route with small ONNX models built here (onnx.helper), on a real face photograph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from storage.errors import InputError
from tasks.embedders import embed_shard, open_embedder, resolve_spec
from tasks.embedders.align import ARCFACE_TEMPLATE_112, centre_crop, five_points_from_68, umeyama, warp_affine
from tasks.embedders.faces import FaceCropper, import_dlib, landmarks, largest_face, shape_predictor

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

# Under xdist this module's tests run on one worker: its module fixture (models) is built once.
pytestmark = pytest.mark.xdist_group("embed_onnx")

W = np.random.default_rng(0).normal(size=(3, 16)).astype(np.float32)


def save_model(path: Path, nodes, inputs, outputs, initializers=()) -> str:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime the faces extra allows
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return str(path)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("onnx")
    f = TensorProto.FLOAT
    out = {
        # ArcFace-shaped: (N, 3, 112, 112) -> mean per channel -> (N, 3) @ W -> (N, 16) "embedding"
        "arcface": save_model(root / "arcface.onnx",
                              [helper.make_node("GlobalAveragePool", ["data"], ["pooled"]),
                               helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
                               helper.make_node("MatMul", ["flat", "W"], ["fc1"])],
                              [helper.make_tensor_value_info("data", f, ["N", 3, 112, 112])],
                              [helper.make_tensor_value_info("fc1", f, ["N", 16]),
                               helper.make_tensor_value_info("pooled", f, ["N", 3, 1, 1])],
                              [numpy_helper.from_array(W, "W")]),
        # the input itself, flattened: NCHW and NHWC, and one exported with a fixed batch of 1
        "nchw": save_model(root / "nchw.onnx", [helper.make_node("Flatten", ["x"], ["y"], axis=1)],
                           [helper.make_tensor_value_info("x", f, ["N", 3, 4, 5])],
                           [helper.make_tensor_value_info("y", f, ["N", 60])]),
        "nhwc": save_model(root / "nhwc.onnx", [helper.make_node("Flatten", ["x"], ["y"], axis=1)],
                           [helper.make_tensor_value_info("x", f, ["N", 4, 5, 3])],
                           [helper.make_tensor_value_info("y", f, ["N", 60])]),
        "batch1": save_model(root / "batch1.onnx", [helper.make_node("Flatten", ["x"], ["y"], axis=1)],
                             [helper.make_tensor_value_info("x", f, [1, 3, 4, 5])],
                             [helper.make_tensor_value_info("y", f, [1, 60])]),
        "vector": save_model(root / "vector.onnx", [helper.make_node("Identity", ["x"], ["y"])],
                             [helper.make_tensor_value_info("x", f, ["N", 10])],
                             [helper.make_tensor_value_info("y", f, ["N", 10])]),
    }
    (root / "broken.onnx").write_bytes(b"\x08\x07garbage")
    out["broken"] = str(root / "broken.onnx")
    return out


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("photos")
    out = {}
    for name, pixels in (("astronaut", data.astronaut()), ("coffee", data.coffee())):
        Image.fromarray(pixels).save(root / f"{name}.png")
        out[name] = str(root / f"{name}.png")
    return out


def test_arcface_route_on_a_real_face(models, photos):
    spec = resolve_spec(f"onnx:{models['arcface']}", normalize=False)
    assert spec.config["align"] == "arcface" and spec.config["preprocess"] == "arcface"
    result = embed_shard([photos["astronaut"], photos["coffee"]], spec)
    assert result.face_detected.tolist() == [True, False] and result.embeddings.shape == (2, 16)
    # by hand: 68 landmarks -> five points -> similarity onto the template -> (x - 127.5) / 127.5, NCHW
    image = data.astronaut()
    five = five_points_from_68(landmarks(image, largest_face(image, 1), 68))
    chip = warp_affine(image, umeyama(five, ARCFACE_TEMPLATE_112), (112, 112))
    x = ((chip.astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1)[None]
    session = ort.InferenceSession(models["arcface"], providers=["CPUExecutionProvider"])
    assert np.allclose(result.embeddings[0], session.run(["fc1"], {"data": x})[0][0], atol=1e-5)
    fallback = centre_crop(data.coffee(), (112, 112))
    xf = ((fallback.astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1)[None]
    assert np.allclose(result.embeddings[1], session.run(["fc1"], {"data": xf})[0][0], atol=1e-5)
    again = embed_shard([photos["astronaut"], photos["coffee"]], spec)
    assert np.array_equal(again.embeddings, result.embeddings) and again.key == result.key


def test_dlib_alignment_and_a_named_output(models, photos):
    spec = resolve_spec(f"onnx:{models['arcface']}", {"align": "dlib", "output": "pooled", "preprocess": "unit"},
                        normalize=False)
    result = embed_shard([photos["astronaut"]], spec)
    image = data.astronaut()
    shape = shape_predictor(5)(image, largest_face(image, 1))
    chip = import_dlib().get_face_chip(image, shape, size=112, padding=0.25)
    assert np.allclose(result.embeddings[0], chip.reshape(-1, 3).mean(axis=0) / 255, atol=1e-5)
    assert FaceCropper("dlib", (112, 112))(image)[1]


@pytest.mark.parametrize("name", ["nchw", "nhwc", "batch1"])
def test_layouts_and_preprocessing_reach_the_model(models, tmp_path, name):
    pixels = [np.random.default_rng(k).integers(0, 256, (4, 5, 3), dtype=np.uint8) for k in range(3)]
    paths = []
    for k, p in enumerate(pixels):
        Image.fromarray(p).save(tmp_path / f"{k}.png")
        paths.append(str(tmp_path / f"{k}.png"))
    spec = resolve_spec(f"onnx:{models[name]}", {"align": "none", "preprocess": "vggface2"}, normalize=False)
    result = embed_shard(paths, spec)
    x = np.stack(pixels).astype(np.float64)[..., ::-1] - [91.4953, 103.8827, 131.0912]
    if name != "nhwc":
        x = x.transpose(0, 3, 1, 2)
    assert np.allclose(result.embeddings, x.reshape(3, -1), atol=1e-4)


def test_onnx_refusals_before_any_work(models, tmp_path):
    with pytest.raises(InputError, match="broken.onnx: the ONNX model does not load"):
        open_embedder(resolve_spec(f"onnx:{models['broken']}"))
    with pytest.raises(InputError, match="has no output 'embedding'; its outputs are fc1, pooled"):
        open_embedder(resolve_spec(f"onnx:{models['arcface']}", {"output": "embedding"}))
    with pytest.raises(InputError, match=r"input 'x' has shape \['N', 10\]; expected RGB images"):
        open_embedder(resolve_spec(f"onnx:{models['vector']}"))
    with pytest.raises(InputError, match=r"input_size \[128, 128\] differs from the model's input 112x112"):
        open_embedder(resolve_spec(f"onnx:{models['arcface']}", {"input_size": 128}))
    with pytest.raises(InputError, match="option 'align' must be one of arcface, dlib, none"):
        resolve_spec(f"onnx:{models['arcface']}", {"align": "mtcnn"})
    with pytest.raises(InputError, match="no such model file"):
        resolve_spec(f"onnx:{tmp_path / 'w600k_r50.onnx'}")
