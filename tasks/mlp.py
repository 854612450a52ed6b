"""The study's classifier (corrected) as a Keras model, and a compiled trainer with ``fit``'s semantics.

Model (:func:`build_keras_model`): input -> Dense(u, relu) for each u in ``hidden_units`` -> Dense(2, softmax);
Glorot-uniform kernels seeded from the job's seed, zero biases (Keras' default initialisers).

Training, with either trainer: categorical cross-entropy averaged over each mini-batch; Adam with Keras'
settings (``learning_rate``, beta_1 = 0.9, beta_2 = 0.999, epsilon = 1e-7, bias correction as in
``keras.optimizers.Adam``); mini-batches of ``batch_size`` rows, reshuffled every epoch, the last partial batch
kept.

- ``trainer="fit"``: plain ``model.compile(Adam, "categorical_crossentropy")`` + ``model.fit``: the reference.
  At the study's protocol (1000 x 2048, 200 epochs, batch 5) it runs 40,000 steps, each a Python-driven call of
  a TensorFlow graph: the per-step overhead dominates.
- ``trainer="fast"`` (:func:`train_fast`): the same computation, all epochs inside ONE XLA-compiled function
  (``tf.function(jit_compile=True)``: ``tf.while_loop`` over epochs and batches, weights and Adam moments as loop
  state). The per-epoch orders are drawn up front with numpy from the seed. Layout details that make XLA's CPU
  code fast without changing the arithmetic: the first layer's kernel is padded with zero columns to a multiple
  of 16 units (the padded units are sliced off after the matmul, so they never affect anything), its gradient
  x^T.delta for a batch of <= 16 rows is written as a sum of outer products (which XLA fuses into the Adam
  update instead of materialising it), and the small layers' parameters are kept flat. Measured ~10x faster
  than ``fit`` at the study's protocol, same accuracy (docs/PERFORMANCE.md, bench/bench_mlp.py); a test checks
  the weights against Keras' own ``train_on_batch`` over the same batches. Same seed, same numbers.

TensorFlow is imported lazily (first ``fit``), after the thread budget is set.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from storage.errors import InputError
from tasks.threads import limit_tensorflow_threads

ADAM_BETA_1 = 0.9     # keras.optimizers.Adam defaults
ADAM_BETA_2 = 0.999
ADAM_EPSILON = 1e-7
_LANES = 16           # first-layer units are padded to a multiple of this (one AVX-512 vector of float32)
_UNROLL_MAX = 16      # batches up to this size get the first-layer gradient as a fused sum of outer products
_PREDICT_CHUNK = 8192
_TRAINERS: dict[tuple, Any] = {}  # compiled training functions, one per architecture and optimiser setting


def _tensorflow(threads: int):
    """Import TensorFlow with its pools limited to ``threads`` (effective only before its first op)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    limit_tensorflow_threads(threads)
    return tf


def layer_seeds(seed: int, n_layers: int) -> list[int]:
    """One initialiser seed per Dense layer, derived from the job's seed."""
    return [int(s) for s in np.random.SeedSequence([seed, 0]).generate_state(n_layers)]


def epoch_orders(seed: int, epochs: int, n: int) -> np.ndarray:
    """The (epochs, n) row order of every epoch of :func:`train_fast`: an independent permutation per epoch."""
    rng = np.random.default_rng([seed, 1])
    return np.stack([rng.permutation(n) for _ in range(epochs)]).astype(np.int32)


def build_keras_model(dim: int, hidden_units: Sequence[int], seed: int, threads: int = 1):
    """input(dim) -> Dense(u, relu) for u in hidden_units -> Dense(2, softmax), seeded Glorot-uniform kernels."""
    _tensorflow(threads)
    import keras

    seeds = layer_seeds(seed, len(hidden_units) + 1)
    layers: list[Any] = [keras.Input((dim,))]
    for units, s in zip(hidden_units, seeds):
        layers.append(keras.layers.Dense(units, activation="relu",
                                         kernel_initializer=keras.initializers.GlorotUniform(seed=s)))
    layers.append(keras.layers.Dense(2, activation="softmax",
                                     kernel_initializer=keras.initializers.GlorotUniform(seed=seeds[-1])))
    return keras.Sequential(layers)


def fit_keras(model, X: np.ndarray, y: np.ndarray, *, epochs: int, batch_size: int, learning_rate: float,
              seed: int) -> None:
    """The reference trainer: plain ``model.fit`` (its shuffles come from TensorFlow's global seed)."""
    import keras

    keras.utils.set_random_seed(seed)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate), loss="categorical_crossentropy")
    model.fit(X, np.eye(2, dtype=np.float32)[y], epochs=epochs, batch_size=batch_size, shuffle=True, verbose=0)


def train_fast(model, X: np.ndarray, y: np.ndarray, *, epochs: int, batch_size: int, learning_rate: float,
               seed: int) -> None:
    """Train ``model`` (from :func:`build_keras_model`) in place with fit's semantics in one compiled loop."""
    import tensorflow as tf  # its thread pools were set when the model was built

    weights = model.get_weights()  # [W1, b1, W2, b2, ..., W_out, b_out]
    hidden = tuple(w.shape[1] for w in weights[0:-2:2])
    d, h1 = weights[0].shape
    h1p = -(-h1 // _LANES) * _LANES
    W1 = np.zeros((d, h1p), np.float32)
    W1[:, :h1] = weights[0]
    params = [W1] + [w.ravel() for w in weights[1:]]
    zeros = [np.zeros_like(p) for p in params]
    run = _trainer(hidden, batch_size, float(learning_rate))
    orders = epoch_orders(seed, epochs, len(X))
    out = run(tf.constant(X, tf.float32), tf.constant(np.eye(2, dtype=np.float32)[y]), tf.constant(orders),
              [tf.constant(p) for p in params], [tf.constant(z) for z in zeros], [tf.constant(z) for z in zeros])
    trained = [p.numpy() for p in out]
    model.set_weights([trained[0][:, :h1]] + [t.reshape(w.shape) for t, w in zip(trained[1:], weights[1:])])


def _trainer(hidden: tuple[int, ...], batch: int, lr: float):
    """The compiled training function for this architecture (traced again by TensorFlow per data shape)."""
    key = (hidden, batch, lr)
    if key in _TRAINERS:
        return _TRAINERS[key]
    import tensorflow as tf

    b1, b2, eps = ADAM_BETA_1, ADAM_BETA_2, ADAM_EPSILON
    h1 = hidden[0]
    units = list(hidden) + [2]
    # shapes of the flat parameters after the first kernel: b1, then (W, b) of every later layer
    small_shapes = [(h1,)] + [s for i in range(1, len(units)) for s in ((units[i - 1], units[i]), (units[i],))]

    def step(params, ms, vs, t, xb, yb):
        bsz = xb.shape[0]
        W1 = params[0]
        small = [tf.reshape(p, s) for p, s in zip(params[1:], small_shapes)]
        kernels = [None] + small[1::2]
        biases = small[0::2]
        z = tf.matmul(xb, W1)
        if W1.shape[1] != h1:
            z = z[:, :h1]
        zs = [z + biases[0]]
        acts = [xb, tf.nn.relu(zs[0])]
        for k in range(1, len(units)):
            zs.append(tf.matmul(acts[-1], kernels[k]) + biases[k])
            if k < len(units) - 1:
                acts.append(tf.nn.relu(zs[-1]))
        delta = (tf.nn.softmax(zs[-1]) - yb) / float(bsz)  # d(mean cross-entropy)/d(logits)
        grads_small: list[Any] = []
        for k in range(len(units) - 1, 0, -1):
            grads_small[:0] = [tf.reshape(tf.matmul(acts[k], delta, transpose_a=True), [-1]),
                               tf.reduce_sum(delta, 0)]
            delta = tf.matmul(delta, kernels[k], transpose_b=True) * tf.cast(zs[k - 1] > 0, tf.float32)
        grads_small.insert(0, tf.reduce_sum(delta, 0))
        if W1.shape[1] != h1:
            delta = tf.pad(delta, [[0, 0], [0, W1.shape[1] - h1]])
        if bsz <= _UNROLL_MAX:
            g1 = xb[0][:, None] * delta[0][None, :]
            for r in range(1, bsz):
                g1 = g1 + xb[r][:, None] * delta[r][None, :]
        else:
            g1 = tf.matmul(xb, delta, transpose_a=True)
        t = t + 1.0
        alpha = lr * tf.sqrt(1.0 - tf.pow(b2, t)) / (1.0 - tf.pow(b1, t))
        new_p, new_m, new_v = [], [], []
        for p, g, m, v in zip(params, [g1] + grads_small, ms, vs):
            m = m + (g - m) * (1.0 - b1)
            v = v + (tf.square(g) - v) * (1.0 - b2)
            new_p.append(p - (m * alpha) / (tf.sqrt(v) + eps))
            new_m.append(m)
            new_v.append(v)
        return new_p, new_m, new_v, t

    @tf.function(jit_compile=True, reduce_retracing=False)
    def run(X, Y, orders, params, ms, vs):
        n = X.shape[0]
        n_full, rem = divmod(n, batch)

        def epoch(e, params, ms, vs, t):
            order = orders[e]

            def batch_step(i, params, ms, vs, t):
                idx = tf.slice(order, [i * batch], [batch])
                return (i + 1, *step(params, ms, vs, t, tf.gather(X, idx), tf.gather(Y, idx)))

            _, params, ms, vs, t = tf.while_loop(lambda i, *_: i < n_full, batch_step,
                                                 (tf.constant(0), params, ms, vs, t))
            if rem:
                idx = order[n_full * batch:]
                params, ms, vs, t = step(params, ms, vs, t, tf.gather(X, idx), tf.gather(Y, idx))
            return e + 1, params, ms, vs, t

        _, params, _, _, _ = tf.while_loop(lambda e, *_: e < orders.shape[0], epoch,
                                           (tf.constant(0), params, ms, vs, tf.constant(0.0)))
        return params

    _TRAINERS[key] = run
    return run


class MLPClassifier:
    """The ``mlp`` model type: a Keras model trained by :func:`train_fast` (or ``fit`` with trainer="fit")."""

    def __init__(self, epochs: int = 200, batch_size: int = 5, hidden_units: Sequence[int] = (60, 60),
                 learning_rate: float = 0.001, trainer: str = "fast", seed: int = 0, threads: int = 1) -> None:
        self.epochs = epochs
        self.batch_size = batch_size
        self.hidden_units = tuple(hidden_units)
        self.learning_rate = learning_rate
        self.trainer = trainer
        self.seed = seed
        self.threads = threads
        self.model_: Any = None
        _tensorflow(threads)  # import (and limit) TensorFlow now, so that fit times training only

    def fit(self, X: np.ndarray, y: np.ndarray) -> MLPClassifier:
        X = np.ascontiguousarray(X, dtype=np.float32)
        y = np.asarray(y)
        if X.ndim != 2 or len(X) != len(y) or len(X) == 0:
            raise InputError(f"mlp: expected a non-empty (n, d) matrix and n labels, got {X.shape} and {y.shape}")
        if not np.isin(y, (0, 1)).all():
            raise InputError("mlp: labels must be gender codes 0 (male) or 1 (female)")
        y = y.astype(np.int64)
        self.model_ = build_keras_model(X.shape[1], self.hidden_units, self.seed, self.threads)
        train = fit_keras if self.trainer == "fit" else train_fast
        train(self.model_, X, y, epochs=self.epochs, batch_size=self.batch_size,
              learning_rate=self.learning_rate, seed=self.seed)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(n, 2) class probabilities (male, female)."""
        if self.model_ is None:
            raise RuntimeError("mlp: predict before fit")
        X = np.asarray(X, dtype=np.float32)
        chunks = [np.asarray(self.model_(X[s:s + _PREDICT_CHUNK], training=False))
                  for s in range(0, len(X), _PREDICT_CHUNK)]
        return np.concatenate(chunks) if chunks else np.zeros((0, 2), np.float32)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Gender codes, 0 = male, 1 = female."""
        return np.argmax(self.predict_proba(X), axis=1)
