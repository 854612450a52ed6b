"""The mlp's compiled trainer: its step schedule, padded layout, one-time compilation and XLA settings."""

from __future__ import annotations

import os

import numpy as np

from tasks.models import mlp
from tasks.models import build_model, resolve_model_config


def test_step_schedule_cuts_every_epoch_into_batches_and_counts_the_partial_one():
    orders = mlp.epoch_orders(seed=3, epochs=2, n=7)
    idx, counts = mlp.step_schedule(orders, batch=3)
    assert idx.shape == (6, 3) and counts.tolist() == [3, 3, 1, 3, 3, 1]
    for e in range(2):
        steps = idx[3 * e:3 * e + 3]
        assert steps.ravel()[:7].tolist() == orders[e].tolist()  # the epoch's order, batch by batch
        assert set(steps[2, 1:].tolist()) <= set(orders[e].tolist())  # padding rows are real rows (masked)
    idx, counts = mlp.step_schedule(mlp.epoch_orders(0, 1, 10), batch=5)
    assert idx.shape == (2, 5) and counts.tolist() == [5, 5]


def test_padded_layout_round_trips_and_padded_units_stay_exactly_zero():
    keras_w = [w for w in mlp.build_keras_model(12, (10, 3), seed=1).get_weights()]
    W1, small = mlp.to_padded(keras_w)
    assert W1.shape == (12, 16) and not W1[:, 10:].any()
    back = mlp.from_padded(W1, small, keras_w)
    assert all(np.array_equal(a, b) for a, b in zip(back, keras_w))

    rng = np.random.default_rng(0)
    X = rng.random((23, 12), dtype=np.float32)
    y = (rng.random(23) < 0.5).astype(np.int64)
    W1, small = mlp.train_padded(keras_w, X, y, epochs=4, batch_size=5, learning_rate=0.05, seed=2)
    h1p, shapes = mlp._padded_shapes((10, 3))
    b1, W2 = small[:h1p], small[h1p:h1p + 16 * 3].reshape(16, 3)
    assert np.abs(W1[:, :10] - keras_w[0]).max() > 1e-3  # the real units trained ...
    assert not W1[:, 10:].any() and not b1[10:].any() and not W2[10:].any()  # ... the padding stayed 0


def test_warm_up_compiles_once_for_any_row_count_epochs_and_learning_rate():
    dim, hidden, batch = 24, (8,), 4
    assert mlp.warm_up(dim, hidden, batch) > 0
    assert mlp.warm_up(dim, hidden, batch) == 0.0
    run = mlp._TRAINERS[(hidden, batch, False)]  # the unweighted loop
    traced = run.experimental_get_tracing_count()
    rng = np.random.default_rng(1)
    for n, epochs, lr in [(10, 1, 0.01), (37, 3, 0.001), (301, 2, 0.1)]:
        X = rng.random((n, dim), dtype=np.float32)
        clf = build_model("mlp", resolve_model_config("mlp", {"hidden_units": list(hidden), "batch_size": batch,
                                                              "epochs": epochs, "learning_rate": lr}), seed=0)
        clf.fit(X, np.arange(n) % 2)
    assert run.experimental_get_tracing_count() == traced  # no new trace, so no new XLA compilation


def test_a_cell_compiles_its_models_width_before_the_timed_fit(monkeypatch):
    """run_cell calls the classifier's prepare(width) before it times fit: the trainer for this width and
    architecture is compiled then (not the study's 2048-d one), and fit traces nothing new."""
    from tasks.kinds.cell import run_cell

    dim, hidden, batch = 19, (6, 5), 3
    assert not any(key[1:] == (hidden, batch) for key in mlp._WARM)
    build_model("mlp", resolve_model_config("mlp", {"hidden_units": list(hidden), "batch_size": batch}), seed=0)
    assert not any(key[1:] == (hidden, batch) for key in mlp._WARM)   # building alone compiles nothing
    rng = np.random.default_rng(0)
    X, gender = rng.random((40, dim), dtype=np.float32), np.arange(40) % 2
    config = resolve_model_config("mlp", {"hidden_units": list(hidden), "batch_size": batch, "epochs": 2})
    traced = {}

    def fit_tracing(self, X, y, sample_weight=None):   # the trainer's traces, counted as fit starts
        run = mlp._TRAINERS[(hidden, batch, False)]
        traced["before"] = run.experimental_get_tracing_count()
        out = original(self, X, y, sample_weight)
        traced["after"] = run.experimental_get_tracing_count()
        return out

    original = mlp.MLPClassifier.fit
    monkeypatch.setattr(mlp.MLPClassifier, "fit", fit_tracing)
    out = run_cell(X, gender, np.arange(30), {"g": np.arange(30, 40)}, model="mlp", model_config=config,
                   train_group="g", seed=0)
    assert (dim, hidden, batch) in mlp._WARM and (2048, hidden, batch) not in mlp._WARM
    assert traced["after"] == traced["before"] > 0 and len(out["accuracy"]) == 1


def test_xla_flags_are_added_without_losing_other_options(monkeypatch):
    assert "xla_cpu_use_multi_output_fusion" in os.environ["XLA_FLAGS"]
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x --xla_backend_extra_options=foo")
    mlp._set_xla_flags()
    assert os.environ["XLA_FLAGS"] == ("--xla_dump_to=/tmp/x --xla_backend_extra_options=foo,"
                                       "xla_cpu_use_multi_output_fusion --xla_cpu_prefer_vector_width=512")
    mlp._set_xla_flags()
    assert os.environ["XLA_FLAGS"].count("multi_output") == 1 and os.environ["XLA_FLAGS"].count("width") == 1
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_prefer_vector_width=256")
    mlp._set_xla_flags()
    assert os.environ["XLA_FLAGS"] == ("--xla_cpu_prefer_vector_width=256 "
                                       "--xla_backend_extra_options=xla_cpu_use_multi_output_fusion")
