"""The dlib route on real photographs shipped with scikit-image (no downloads), and the shard machinery."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from storage.errors import InputError
from tasks.embedders import EmbedSpec, embed_shard, resolve_spec, shard_key
from tasks.embedders.dlib import DlibEmbedder

# Under xdist this module's tests run on one worker: its module fixture (photos) is built once.
pytestmark = pytest.mark.xdist_group("embed_dlib")


def save(path: Path, pixels: np.ndarray) -> str:
    Image.fromarray(np.ascontiguousarray(pixels)).save(path)
    return str(path)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("photos")
    astronaut = data.astronaut()  # Eileen Collins, a frontal face
    lfw = (data.lfw_subset()[0] * 255).astype(np.uint8)  # another person's face (LFW, 25 x 25, grey)
    return {
        "astronaut": save(root / "astronaut.png", astronaut),
        "shifted": save(root / "shifted.png", astronaut[13:, 9:]),
        "smaller": save(root / "smaller.png", np.asarray(Image.fromarray(astronaut).resize((420, 420),
                                                                                        Image.BICUBIC))),
        "other_person": save(root / "other_person.png", np.asarray(Image.fromarray(lfw).resize((150, 150),
                                                                                            Image.BICUBIC))),
        "coffee": save(root / "coffee.jpg", data.coffee()),
        "flat": save(root / "flat.png", np.full((120, 90, 3), 128, dtype=np.uint8)),
        "grey_camera": save(root / "camera.png", data.camera()),
    }


def test_the_largest_real_face_is_found_and_embedded(photos):
    result = embed_shard([photos["astronaut"]], resolve_spec("dlib"))
    assert result.embeddings.shape == (1, 128) and result.embeddings.dtype == np.float32
    assert result.face_detected.tolist() == [True] and result.errors == ()
    assert np.isclose(np.linalg.norm(result.embeddings[0]), 1.0, atol=1e-6)
    chip, found = DlibEmbedder({}).chip(data.astronaut())
    assert found and chip.shape == (150, 150, 3)
    # HOG also fires (weakly) on the badge on her suit: the largest box is her face, so the chip's colours are
    # those of her face's box (175..265 x 76..166), not of the badge's
    face = data.astronaut()[76:166, 175:265].reshape(-1, 3).mean(axis=0)
    badge = data.astronaut()[335:425, 126:215].reshape(-1, 3).mean(axis=0)
    centre = chip[30:120, 30:120].reshape(-1, 3).mean(axis=0)
    assert np.abs(centre - face).sum() < np.abs(centre - badge).sum()


def test_same_face_moved_or_rescaled_embeds_closer_than_other_images(photos):
    names = ["astronaut", "shifted", "smaller", "other_person", "coffee", "grey_camera"]
    result = embed_shard([photos[n] for n in names], resolve_spec("dlib"))
    e = dict(zip(names, result.embeddings))
    assert result.face_detected.tolist()[:3] == [True, True, True]
    dist = {n: float(np.linalg.norm(e["astronaut"] - e[n])) for n in names[1:]}
    same = max(dist["shifted"], dist["smaller"])
    others = min(dist["other_person"], dist["coffee"], dist["grey_camera"])
    assert same < 0.3 and others > 0.4 and same < others / 2, dist


def test_no_face_gives_the_centre_crop_fallback_or_is_skipped(photos):
    paths = [photos["coffee"], photos["astronaut"], photos["flat"]]
    result = embed_shard(paths, resolve_spec("dlib"))
    assert result.index.tolist() == [0, 1, 2]
    assert result.face_detected.tolist() == [False, True, False]
    fallback = DlibEmbedder({}).chip(data.coffee())
    assert not fallback[1] and fallback[0].shape == (150, 150, 3)
    skipped = embed_shard(paths, resolve_spec("dlib", skip_undetected=True))
    assert skipped.index.tolist() == [1] and skipped.face_detected.tolist() == [True]
    assert skipped.skipped == (photos["coffee"], photos["flat"])
    assert np.array_equal(skipped.embeddings[0], result.embeddings[1])
    raw = embed_shard(paths, resolve_spec("dlib", normalize=False))
    assert np.allclose(raw.embeddings / np.linalg.norm(raw.embeddings, axis=1, keepdims=True), result.embeddings,
                       atol=1e-6)
    assert not np.allclose(np.linalg.norm(raw.embeddings, axis=1), 1.0)


def test_large_photographs_may_be_shrunk_for_detection_only(photos, tmp_path):
    big = save(tmp_path / "big.png", np.asarray(Image.fromarray(data.astronaut()).resize((1400, 1400),
                                                                                       Image.BICUBIC)))
    spec = resolve_spec("dlib", {"detect_max_side": 500, "upsample": 1})
    result = embed_shard([photos["astronaut"], big], spec)
    assert result.face_detected.tolist() == [True, True]
    assert np.linalg.norm(result.embeddings[0] - result.embeddings[1]) < 0.15
    assert shard_key([big], spec) != shard_key([big], resolve_spec("dlib"))


def test_deterministic_across_runs_and_batch_sizes(photos):
    paths = [photos[n] for n in ("astronaut", "coffee", "smaller")]
    a = embed_shard(paths, resolve_spec("dlib"))
    b = embed_shard(paths, resolve_spec("dlib"))
    c = embed_shard(paths, resolve_spec("dlib", batch_size=1))
    assert np.array_equal(a.embeddings, b.embeddings)
    assert np.allclose(a.embeddings, c.embeddings, atol=1e-6)
    assert a.key == b.key == c.key == shard_key(paths, resolve_spec("dlib", batch_size=7))


def test_undecodable_images_are_listed_with_their_reason(photos, tmp_path):
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(Path(photos["coffee"]).read_bytes()[:300])
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    paths = [str(truncated), photos["astronaut"], str(text), str(tmp_path / "gone.png")]
    result = embed_shard(paths, resolve_spec("dlib"))
    assert result.index.tolist() == [1] and result.embeddings.shape == (1, 128)
    reasons = dict(result.errors)
    assert set(reasons) == {str(truncated), str(text), str(tmp_path / "gone.png")}
    assert "cannot decode the image" in reasons[str(truncated)] and "truncated" in reasons[str(truncated)].lower()
    assert reasons[str(text)] == "not an image Pillow can identify"
    assert "cannot read the file" in reasons[str(tmp_path / "gone.png")]
    assert result.key == ""  # an unreadable file: no key, the shard is not complete


def test_shard_key_follows_content_and_configuration_not_names(photos, tmp_path):
    paths = [photos["astronaut"], photos["coffee"]]
    renamed = [shutil.copy(p, tmp_path / f"copy{k}{Path(p).suffix}") for k, p in enumerate(paths)]
    spec = resolve_spec("dlib")
    key = shard_key(paths, spec)
    assert key == shard_key(renamed, spec) == shard_key(paths, resolve_spec("dlib", batch_size=3))
    assert key != shard_key(paths[::-1], spec)
    assert key != shard_key(paths, resolve_spec("dlib", {"upsample": 2}))
    assert key != shard_key(paths, resolve_spec("dlib", normalize=False))
    assert key != shard_key(paths, resolve_spec("dlib", skip_undetected=True))
    save(Path(renamed[1]), data.chelsea())
    assert shard_key(renamed, spec) != key
    assert len(key) == 64 and isinstance(spec, EmbedSpec)


def test_dlib_option_refusals():
    with pytest.raises(InputError, match="takes no option 'layer'"):
        resolve_spec("dlib", {"layer": "avg_pool"})
    with pytest.raises(InputError, match="option 'upsample' must be an integer >= 0"):
        resolve_spec("dlib", {"upsample": -1})
    with pytest.raises(InputError, match="unknown embedding model 'facenet'"):
        resolve_spec("facenet")
