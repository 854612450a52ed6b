"""Face geometry and pixel preprocessing, checked against scikit-image, Keras and the published constants."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data, transform

from tasks.embedders.align import (ARCFACE_TEMPLATE_112, align_to_template, arcface_template, centre_crop,
                                   five_points_from_68, umeyama, warp_affine)
from tasks.embedders.faces import FaceCropper, landmarks, largest_face
from tasks.embedders.preprocess import PREPROCESS, preprocess


def test_arcface_template_is_insightfaces():
    # insightface python-package/insightface/utils/face_align.py, arcface_dst (112 x 112)
    assert np.array_equal(ARCFACE_TEMPLATE_112, [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                                                  [41.5493, 92.3655], [70.7299, 92.2041]])
    assert np.allclose(arcface_template(224), 2 * ARCFACE_TEMPLATE_112)


def test_umeyama_matches_scikit_image_similarity_transform():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 500, (5, 2))
    dst = ARCFACE_TEMPLATE_112 + rng.normal(0, 1.5, (5, 2))  # not exactly a similarity: least squares
    if hasattr(transform.SimilarityTransform, "from_estimate"):  # scikit-image >= 0.26
        ref = transform.SimilarityTransform.from_estimate(src, dst)
    else:
        ref = transform.SimilarityTransform()
        assert ref.estimate(src, dst)
    assert np.allclose(umeyama(src, dst), ref.params, atol=1e-9)


def test_umeyama_recovers_an_exact_similarity_and_refuses_reflections():
    angle, scale, t = 0.3, 2.5, np.array([10.0, -4.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = ARCFACE_TEMPLATE_112
    m = umeyama(src, src @ rot.T + t)
    assert np.allclose(m[:2, :2], rot) and np.allclose(m[:2, 2], t)
    mirrored = umeyama(src, src * [-1, 1])  # the best proper similarity, never a reflection
    assert np.linalg.det(mirrored[:2, :2]) > 0


def test_warp_matches_scikit_image_warp():
    image = data.astronaut()
    m = umeyama(np.array([[200.0, 110], [250, 112], [225, 140], [205, 160], [245, 158]]), ARCFACE_TEMPLATE_112)
    ours = warp_affine(image, m, (112, 112)).astype(int)
    ref = transform.warp(image, transform.SimilarityTransform(m).inverse, output_shape=(112, 112), order=1,
                         mode="constant", cval=0, preserve_range=True)
    assert np.abs(ours - np.rint(ref)).max() <= 1


def test_alignment_puts_five_points_on_the_arcface_template():
    # An image with five bright dots at landmarks = the template under a known similarity (rotated, scaled,
    # shifted): after alignment each dot's centre of mass sits on its template position.
    angle, scale, t = -0.25, 2.2, np.array([140.0, 90.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = ARCFACE_TEMPLATE_112 @ rot.T + t
    image = np.zeros((400, 400, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:400, 0:400]
    for x, y in points:
        image[(xx - x) ** 2 + (yy - y) ** 2 <= 3.5 ** 2] = 255
    chip = align_to_template(image, points, arcface_template(112), (112, 112))[..., 0].astype(float)
    ys, xs = np.mgrid[0:112, 0:112]
    for x, y in ARCFACE_TEMPLATE_112:
        near = ((xs - x) ** 2 + (ys - y) ** 2) <= 6 ** 2
        w = chip * near
        assert np.hypot((w * xs).sum() / w.sum() - x, (w * ys).sum() / w.sum() - y) < 0.35


def test_real_face_landmarks_align_onto_the_template():
    image = data.astronaut()
    rect = largest_face(image, 1)
    five = five_points_from_68(landmarks(image, rect, 68))
    m = umeyama(five, ARCFACE_TEMPLATE_112)
    moved = np.c_[five, np.ones(5)] @ m[:2].T
    # eyes, nose tip and mouth corners of a real frontal face fit the template within a few pixels (she smiles:
    # her mouth corners are ~5 px wider than the template's)
    error = np.hypot(*(moved - ARCFACE_TEMPLATE_112).T)
    assert error[:3].max() < 5 and error.max() < 8
    assert five[0, 0] < five[1, 0] and five[3, 0] < five[4, 0]  # picture's left first, like the template
    chip, found = FaceCropper("arcface", (112, 112))(image)
    assert found and chip.shape == (112, 112, 3) and chip.dtype == np.uint8
    assert np.array_equal(chip, align_to_template(image, five, ARCFACE_TEMPLATE_112, (112, 112)))


def test_centre_crop_fallback():
    image = np.zeros((40, 100, 3), dtype=np.uint8)
    image[:, 30:70] = 200  # the central 40 x 40 square
    chip, found = FaceCropper("arcface", (20, 20))(image)
    assert not found
    assert np.array_equal(chip, centre_crop(image, (20, 20))) and (chip == 200).all()


# ------------------------------------------------------------------------------------------------ preprocess


def test_preprocess_modes_numerically():
    import keras

    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (2, 5, 4, 3), dtype=np.uint8)
    f = x.astype(np.float32)
    assert np.array_equal(preprocess(x, "none"), f)
    assert np.allclose(preprocess(x, "unit"), f / 255)
    assert np.allclose(preprocess(x, "arcface"), (f - 127.5) / 127.5)
    assert np.allclose(preprocess(x, "arcface"), keras.applications.imagenet_utils.preprocess_input(f.copy(), mode="tf"))
    # keras-vggface utils.preprocess_input(version=2): RGB -> BGR, minus 91.4953, 103.8827, 131.0912 (B, G, R)
    vgg = preprocess(x, "vggface2")
    assert np.allclose(vgg[..., 0], f[..., 2] - 91.4953) and np.allclose(vgg[..., 1], f[..., 1] - 103.8827)
    assert np.allclose(vgg[..., 2], f[..., 0] - 131.0912)
    for mode, keras_mode in (("imagenet", "caffe"), ("imagenet-torch", "torch")):
        ref = keras.applications.imagenet_utils.preprocess_input(f.copy(), mode=keras_mode)
        assert np.allclose(preprocess(x, mode), ref, atol=1e-4), mode
    assert set(PREPROCESS) == {"none", "unit", "arcface", "vggface2", "imagenet", "imagenet-torch"}
    with pytest.raises(ValueError, match="unknown preprocess mode"):
        preprocess(x, "bgr")
