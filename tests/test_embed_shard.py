"""A user's own embedder (package.module:builder), and what embed_shard hands back to an executor."""

from __future__ import annotations

import pickle
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from storage.errors import InputError
from tasks.embedders import (embed_shard, model_fingerprint, open_embedder, resolve_spec, shard_key, split_model,
                              split_shards)

USER_MODULE = '''
import numpy as np


class MeanColour:
    """Features: mean R, G, B and the image height; no face where the image is darker than `dark`."""

    def __init__(self, config, threads):
        self.dark, self.threads = config["dark"], threads

    def embed(self, images):
        feats = np.array([[*img.reshape(-1, 3).mean(axis=0), img.shape[0]] for img in images])
        return feats, feats[:, :3].mean(axis=1) >= self.dark


def build(config, threads):
    return MeanColour(config, threads)


build.defaults = {"dark": 10.0}
build.version = "1"


def plain(config, threads):
    class Plain:
        def embed(self, images):
            return [[float(img.max()), 1.0] for img in images]
    return Plain()


def wrong(config, threads):
    return object()
'''


@pytest.fixture()
def user_package(tmp_path, monkeypatch):
    pkg = tmp_path / "myembed"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "colour.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "myembed.colour"
    for name in [m for m in sys.modules if m.startswith("myembed")]:
        del sys.modules[name]


def write(tmp_path, name, value, shape=(6, 4)):
    Image.fromarray(np.full((*shape, 3), value, dtype=np.uint8)).save(tmp_path / name)
    return str(tmp_path / name)


def test_user_embedder_with_defaults_and_face_flags(user_package, tmp_path):
    paths = [write(tmp_path, "a.png", 200), write(tmp_path, "b.png", 3), write(tmp_path, "c.png", 50, (8, 4))]
    spec = resolve_spec(f"{user_package}:build", {"dark": 20.0}, normalize=False)
    assert spec.kind == "user" and spec.config == {"dark": 20.0}
    result = embed_shard(paths, spec, threads=1)
    assert np.allclose(result.embeddings, [[200, 200, 200, 6], [3, 3, 3, 6], [50, 50, 50, 8]])
    assert result.face_detected.tolist() == [True, False, True]
    skip = embed_shard(paths, resolve_spec(f"{user_package}:build", skip_undetected=True))
    assert skip.index.tolist() == [0, 2] and skip.skipped == (paths[1],)
    assert np.allclose(np.linalg.norm(skip.embeddings, axis=1), 1)
    plain = embed_shard(paths, resolve_spec(f"{user_package}:plain", normalize=False))
    assert plain.face_detected.all() and np.allclose(plain.embeddings[:, 0], [200, 3, 50])
    assert shard_key(paths, spec) != shard_key(paths, resolve_spec(f"{user_package}:build", {"dark": 30.0},
                                                                   normalize=False))


def test_user_embedder_refusals(user_package):
    with pytest.raises(InputError, match=r"takes no option 'bright'; it takes: dark"):
        resolve_spec(f"{user_package}:build", {"bright": 1})
    with pytest.raises(InputError, match="cannot import module 'myembed.nothing'"):
        resolve_spec("myembed.nothing:build")
    with pytest.raises(InputError, match="has no embed"):
        open_embedder(resolve_spec(f"{user_package}:wrong"))


def test_model_names():
    assert split_model("dlib") == ("dlib", None)
    assert split_model("keras:/m/vggface2.h5") == ("keras", "/m/vggface2.h5")
    assert split_model("onnx:w600k_r50.onnx") == ("onnx", "w600k_r50.onnx")
    assert split_model("pkg.mod:build") == ("user", None)
    for bad in ("", "keras:", "resnet50", "pkg mod:build"):
        with pytest.raises(InputError):
            split_model(bad)


def test_results_and_specs_cross_process_boundaries(user_package, tmp_path):
    paths = [write(tmp_path, "a.png", 100), write(tmp_path, "b.png", 30)]
    spec = resolve_spec(f"{user_package}:build", batch_size=1)
    result = embed_shard(paths, spec)
    back = pickle.loads(pickle.dumps(result))
    assert np.array_equal(back.embeddings, result.embeddings) and back.key == result.key == shard_key(paths, spec)
    assert pickle.loads(pickle.dumps(spec)) == spec and spec.to_dict()["batch_size"] == 1
    assert len(model_fingerprint(spec)) == 64
    empty = embed_shard([], resolve_spec("dlib"))
    assert empty.embeddings.shape == (0, 128) and empty.index.shape == (0,) and empty.errors == ()


def test_split_shards():
    assert split_shards(7, 3) == [range(0, 3), range(3, 6), range(6, 7)]
    assert split_shards(0, 5) == []
    with pytest.raises(InputError, match="shard size must be a positive integer"):
        split_shards(4, 0)


def test_importing_the_registry_loads_no_model_library():
    import subprocess

    code = ("import sys, tasks.embedders, storage.images; "
            "print(sorted(m for m in ('dlib', 'tensorflow', 'keras', 'onnxruntime', 'PIL') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
