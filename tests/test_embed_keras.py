"""The keras:PATH route with small models built and saved here (.keras and legacy .h5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from storage.errors import InputError
from tasks.embedders import embed_shard, open_embedder, resolve_spec
from tasks.embedders.align import resize
from tasks.embedders.preprocess import preprocess

# Under xdist this module's tests run on one worker: its module fixture (saved) is built once.
pytestmark = pytest.mark.xdist_group("embed_keras")

keras = pytest.importorskip("keras")


def images(folder: Path, sizes: list[tuple[int, int]]) -> tuple[list[str], list[np.ndarray]]:
    paths, pixels = [], []
    for k, (h, w) in enumerate(sizes):
        arr = np.random.default_rng(k).integers(0, 256, (h, w, 3), dtype=np.uint8)
        path = folder / f"img{k}.png"
        Image.fromarray(arr).save(path)
        paths.append(str(path))
        pixels.append(arr)
    return paths, pixels


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("keras")
    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inp)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    out = keras.layers.Dense(5, name="head")(x)
    functional = keras.Model(inp, out)
    functional.save(root / "cnn.keras")
    sequential = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(3, 3, name="conv"),
                                   keras.layers.Flatten(name="flat"), keras.layers.Dense(6, name="head")])
    sequential.save(root / "legacy.h5")
    inp4 = keras.Input((4, 4, 3))
    identity = keras.Model(inp4, keras.layers.Flatten(name="flat")(inp4))
    identity.save(root / "pixels.keras")
    free = keras.Input((None, None, 3))
    keras.Model(free, keras.layers.GlobalAveragePooling2D(name="gap")(free)).save(root / "free.keras")
    (root / "broken.keras").write_bytes(b"this is not a keras archive")
    return {p.stem + p.suffix: str(p) for p in root.iterdir()}


def test_model_output_and_a_named_layer_match_the_model(saved, tmp_path):
    paths, pixels = images(tmp_path, [(16, 16), (20, 24), (16, 16)])
    model = keras.saving.load_model(saved["cnn.keras"])
    x = preprocess(np.stack([resize(p, (16, 16)) for p in pixels]), "vggface2")
    out = embed_shard(paths, resolve_spec(f"keras:{saved['cnn.keras']}", {"preprocess": "vggface2"},
                                          normalize=False))
    assert out.embeddings.shape == (3, 5) and out.face_detected.all()  # align none: images are face crops
    assert np.allclose(out.embeddings, model.predict(x, verbose=0), atol=1e-5)
    pool = embed_shard(paths, resolve_spec(f"keras:{saved['cnn.keras']}", {"preprocess": "vggface2",
                                                                           "layer": "avg_pool"}))
    sub = keras.Model(model.inputs, model.get_layer("avg_pool").output)
    ref = sub.predict(x, verbose=0)
    assert pool.embeddings.shape == (3, 4)
    assert np.allclose(pool.embeddings, ref / np.linalg.norm(ref, axis=1, keepdims=True), atol=1e-5)


def test_legacy_h5_model_and_layer(saved, tmp_path):
    paths, pixels = images(tmp_path, [(16, 16), (16, 16)])
    model = keras.saving.load_model(saved["legacy.h5"], compile=False)
    x = preprocess(np.stack(pixels), "unit")
    out = embed_shard(paths, resolve_spec(f"keras:{saved['legacy.h5']}", {"preprocess": "unit", "layer": "flat"},
                                          normalize=False))
    sub = keras.Model(model.inputs, model.get_layer("flat").output)
    assert out.embeddings.shape == (2, 14 * 14 * 3)
    assert np.allclose(out.embeddings, sub.predict(x, verbose=0), atol=1e-5)


@pytest.mark.parametrize("mode", ["none", "unit", "arcface", "vggface2", "imagenet", "imagenet-torch"])
def test_each_preprocessing_mode_reaches_the_network_exactly(saved, tmp_path, mode):
    # The network is Flatten(input): its features are the preprocessed pixels themselves.
    paths, pixels = images(tmp_path, [(4, 4), (4, 4)])
    out = embed_shard(paths, resolve_spec(f"keras:{saved['pixels.keras']}", {"preprocess": mode}, normalize=False))
    f = np.stack(pixels).astype(np.float64)
    expected = {"none": f, "unit": f / 255, "arcface": (f - 127.5) / 127.5,
                "vggface2": f[..., ::-1] - [91.4953, 103.8827, 131.0912],
                "imagenet": f[..., ::-1] - [103.939, 116.779, 123.68],
                "imagenet-torch": (f / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]}[mode]
    assert np.allclose(out.embeddings, expected.reshape(2, -1), atol=1e-4)


def test_input_size_for_a_model_without_a_fixed_size(saved, tmp_path):
    paths, pixels = images(tmp_path, [(30, 20)])
    with pytest.raises(InputError, match="input size is not fixed; give input_size"):
        open_embedder(resolve_spec(f"keras:{saved['free.keras']}", {"preprocess": "none"}))
    out = embed_shard(paths, resolve_spec(f"keras:{saved['free.keras']}", {"preprocess": "none",
                                                                          "input_size": [8, 6]}, normalize=False))
    assert np.allclose(out.embeddings[0], resize(pixels[0], (8, 6)).reshape(-1, 3).mean(axis=0), atol=1e-4)


def test_keras_refusals_before_any_work(saved, tmp_path):
    path = saved["cnn.keras"]
    with pytest.raises(InputError, match=r"has no layer 'avg_pooling'; its layers are .*conv, avg_pool, head"):
        open_embedder(resolve_spec(f"keras:{path}", {"preprocess": "vggface2", "layer": "avg_pooling"}))
    with pytest.raises(InputError, match=r"broken.keras: the Keras model does not load"):
        open_embedder(resolve_spec(f"keras:{saved['broken.keras']}", {"preprocess": "none"}))
    with pytest.raises(InputError, match="no such model file"):
        resolve_spec(f"keras:{tmp_path / 'missing.keras'}", {"preprocess": "none"})
    with pytest.raises(InputError, match="needs the option 'preprocess'"):
        resolve_spec(f"keras:{path}")
    with pytest.raises(InputError, match="option 'preprocess' must be one of none, unit, arcface, vggface2"):
        resolve_spec(f"keras:{path}", {"preprocess": "vggface"})
    with pytest.raises(InputError, match=r"input_size \[32, 32\] differs from the model's input 16x16"):
        open_embedder(resolve_spec(f"keras:{path}", {"preprocess": "none", "input_size": 32}))
    with pytest.raises(InputError, match="takes no option 'output'"):
        resolve_spec(f"keras:{path}", {"preprocess": "none", "output": "x"})
