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
- ``trainer="fast"`` (:func:`train_fast`): the same computation in an XLA-compiled ``tf.while_loop`` over the
  training steps (``tf.function(jit_compile=True)``), weights and Adam moments as loop state, the data resident,
  each batch gathered by index inside the loop. The per-epoch orders are drawn up front with numpy from the seed
  (:func:`epoch_orders`) and cut into batches (:func:`step_schedule`); a partial last batch is padded to the
  batch size and its padding rows get an exactly-zero gradient. Layout details that make XLA's CPU code fast
  without changing the arithmetic: the first hidden layer is padded with zero units to a multiple of 16 (zero
  weights in and out: their gradients are exactly 0 and they stay 0), its gradient x^T.delta for a batch of
  <= 16 rows is a sum of outer products, the small layers' parameters are one flat vector, XLA's CPU
  multi-output fusion and 512-bit vectors are switched on (``XLA_FLAGS``, set when this module is imported),
  and the weight update is written so that it fuses with the moments' update: ONE pass over the kernel and its
  two moments per step. The step is then bound by the divider unit (a sqrt and a divide per weight) and XLA's
  code for it, see docs/PERFORMANCE.md (about 13x plain ``fit`` at the study's protocol; 20x is at this
  machine's limit).
  Compiled shapes do not depend on the number of rows (up to ``_ROW_BLOCK``), the epochs or the learning rate,
  so :func:`warm_up` compiles, once per process, what every cell of the study then uses: a cell calls
  ``MLPClassifier.prepare(width)`` (outside the timed ``fit``), and executors call it at worker start for the
  widths and architectures of the grid. A test checks the weights
  against Keras' own ``train_on_batch`` over the same batches. Same seed, same numbers.

Per-sample weights (``fit(X, y, sample_weight=w)``, both trainers): Keras' ``sample_weight`` arithmetic, i.e. the
loss reduction "sum_over_batch_size": each row's cross-entropy times its weight, summed over the mini-batch and
divided by the batch's row count (not by the sum of its weights). The fast trainer holds the weights beside the
rows and multiplies them into the gradient's padding mask, in a loop of its own (compiled on first use; the
unweighted loop is unchanged, so unweighted training keeps its numbers and speed); unit weights give the
unweighted numbers bit for bit. Tested against ``train_on_batch(x, y, sample_weight=w)``.

TensorFlow is imported lazily (``MLPClassifier()`` or the first model), after the thread budget is set.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from storage.errors import InputError
from tasks.runtime import limit_tensorflow_threads

ADAM_BETA_1 = 0.9     # keras.optimizers.Adam defaults
ADAM_BETA_2 = 0.999
ADAM_EPSILON = 1e-7
_LANES = 16           # first-layer units are padded to a multiple of this (one AVX-512 vector of float32)
_UNROLL_MAX = 16      # batches up to this size get the first-layer gradient as a fused sum of outer products
_PREDICT_CHUNK = 8192
_ROW_BLOCK = 4096     # the training rows are held in a buffer of a multiple of this many rows (one compiled shape)
_CHUNK_STEPS = 8192   # training steps per call of the compiled loop (a fixed shape too)
_TRAINERS: dict[tuple, Any] = {}  # compiled training functions, one per (hidden units, batch size)
_WARM: set[tuple] = set()         # (input width, hidden units, batch size) compiled in this process
_XLA_OPTION = "xla_cpu_use_multi_output_fusion"


def _set_xla_flags() -> None:
    """Add XLA's CPU multi-output fusion and 512-bit vectors (where the CPU has them) to ``XLA_FLAGS``, keeping
    the flags already there (XLA reads them at its first compilation in the process)."""
    flags = os.environ.get("XLA_FLAGS", "")
    if _XLA_OPTION not in flags:
        extra = re.search(r"--xla_backend_extra_options=(\S*)", flags)
        if extra:
            flags = flags.replace(extra.group(0), f"{extra.group(0)},{_XLA_OPTION}")
        else:
            flags = f"{flags} --xla_backend_extra_options={_XLA_OPTION}"
    if "--xla_cpu_prefer_vector_width" not in flags:
        flags = f"{flags} --xla_cpu_prefer_vector_width=512"
    os.environ["XLA_FLAGS"] = flags.strip()


_set_xla_flags()


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
              seed: int, sample_weight: np.ndarray | None = None) -> None:
    """The reference trainer: plain ``model.fit`` (its shuffles come from TensorFlow's global seed)."""
    import keras

    keras.utils.set_random_seed(seed)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate), loss="categorical_crossentropy")
    model.fit(X, np.eye(2, dtype=np.float32)[y], epochs=epochs, batch_size=batch_size, shuffle=True, verbose=0,
              sample_weight=sample_weight)


def step_schedule(orders: np.ndarray, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """The training steps of :func:`train_fast`, in order: (steps, batch) row indices and (steps,) row counts.

    Each epoch's order is cut into batches of ``batch`` rows, the last one partial (its count is the number of
    real rows; its missing rows repeat its first row and are masked out of the gradient)."""
    epochs, n = orders.shape
    steps_per_epoch = -(-n // batch)
    padded = np.empty((epochs, steps_per_epoch * batch), np.int32)
    padded[:, :n] = orders
    if n % batch:
        padded[:, n:] = orders[:, n - n % batch][:, None]
    counts = np.full(steps_per_epoch, batch, np.float32)
    counts[-1] = n - (steps_per_epoch - 1) * batch
    return padded.reshape(epochs * steps_per_epoch, batch), np.tile(counts, epochs)


def _padded_shapes(hidden: Sequence[int]) -> tuple[int, list[tuple[int, ...]]]:
    """(h1p, shapes of the flat small parameters): the first hidden layer padded to h1p units (a multiple of
    _LANES); b1 (h1p,), then (W, b) of every later layer, W2 with h1p rows."""
    h1p = -(-hidden[0] // _LANES) * _LANES
    units = [h1p] + list(hidden[1:]) + [2]
    return h1p, [(h1p,)] + [s for i in range(1, len(units)) for s in ((units[i - 1], units[i]), (units[i],))]


def to_padded(weights: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Keras weights [W1, b1, W2, b2, ...] -> (W1 padded with zero units to h1p columns, flat small parameters
    with b1 and W2 padded alike). The padded units have zero weights in and out: their pre-activation is 0,
    ReLU'(0) = 0, so their gradients are exactly 0 and they stay 0 under Adam (0 / (0 + eps) = 0)."""
    h1 = weights[0].shape[1]
    hidden = [w.shape[1] for w in weights[0:-2:2]]
    h1p, shapes = _padded_shapes(hidden)
    W1 = np.zeros((weights[0].shape[0], h1p), np.float32)
    W1[:, :h1] = weights[0]
    parts = []
    for w, shape in zip(weights[1:], shapes):
        p = np.zeros(shape, np.float32)
        p[tuple(slice(0, s) for s in w.shape)] = w
        parts.append(p.ravel())
    return W1, np.concatenate(parts)


def from_padded(W1: np.ndarray, small: np.ndarray, like: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The inverse of :func:`to_padded`, shaped like the Keras weights ``like``."""
    h1p, shapes = _padded_shapes([w.shape[1] for w in like[0:-2:2]])
    out, o = [W1[:, :like[0].shape[1]]], 0
    for w, shape in zip(like[1:], shapes):
        size = int(np.prod(shape))
        out.append(small[o:o + size].reshape(shape)[tuple(slice(0, s) for s in w.shape)])
        o += size
    return [np.ascontiguousarray(w) for w in out]


def train_fast(model, X: np.ndarray, y: np.ndarray, *, epochs: int, batch_size: int, learning_rate: float,
               seed: int, sample_weight: np.ndarray | None = None) -> None:
    """Train ``model`` (from :func:`build_keras_model`) in place with fit's semantics in compiled loops
    (``sample_weight``: one weight per row, Keras' arithmetic; None = 1 each)."""
    weights = model.get_weights()  # [W1, b1, W2, b2, ..., W_out, b_out]
    W1, small = train_padded(weights, X, y, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                             seed=seed, sample_weight=sample_weight)
    model.set_weights(from_padded(W1, small, weights))


def train_padded(weights: Sequence[np.ndarray], X: np.ndarray, y: np.ndarray, *, epochs: int, batch_size: int,
                 learning_rate: float, seed: int,
                 sample_weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`train_fast` from Keras ``weights``; returns the trained parameters as the loop holds them
    (:func:`to_padded`'s layout)."""
    import tensorflow as tf  # its thread pools were set when the model was built

    hidden = tuple(int(w.shape[1]) for w in weights[0:-2:2])
    W1, small = to_padded(weights)
    run = _trainer(hidden, batch_size, weighted=sample_weight is not None)
    n, d = X.shape
    rows = -(-n // _ROW_BLOCK) * _ROW_BLOCK  # one compiled shape for every data set of up to _ROW_BLOCK rows
    X_buf = np.zeros((rows, d), np.float32)
    X_buf[:n] = X
    Y_buf = np.zeros((rows, 2), np.float32)
    Y_buf[np.arange(n), y] = 1.0
    W_buf = np.zeros(rows if sample_weight is not None else 1, np.float32)  # unweighted: unused
    if sample_weight is not None:
        W_buf[:n] = sample_weight
    idx, counts = step_schedule(epoch_orders(seed, epochs, n), batch_size)
    X_t, Y_t, W_t = tf.constant(X_buf), tf.constant(Y_buf), tf.constant(W_buf)
    lr = tf.constant(learning_rate, tf.float32)
    del X_buf
    state = ([tf.constant(W1), tf.constant(small)], [tf.zeros_like(W1), tf.zeros_like(small)],
             [tf.zeros_like(W1), tf.zeros_like(small)], tf.constant(0.0))
    for s in range(0, len(idx), _CHUNK_STEPS):  # a few calls: 40,000 steps = 5 calls
        n_steps = min(_CHUNK_STEPS, len(idx) - s)
        idx_c = np.zeros((_CHUNK_STEPS, batch_size), np.int32)
        idx_c[:n_steps] = idx[s:s + n_steps]
        cnt_c = np.ones(_CHUNK_STEPS, np.float32)
        cnt_c[:n_steps] = counts[s:s + n_steps]
        state = run(X_t, Y_t, W_t, tf.constant(idx_c), tf.constant(cnt_c), tf.constant(n_steps), *state, lr)
    if rows == _ROW_BLOCK and sample_weight is None:  # warm_up compiles the unweighted loop
        _WARM.add((d, hidden, batch_size))
    return state[0][0].numpy(), state[0][1].numpy()


def _trainer(hidden: tuple[int, ...], batch: int, weighted: bool = False):
    """The compiled training function for this architecture and batch size (XLA compiles it once per data
    width and row block: see :func:`warm_up`)."""
    key = (hidden, batch, weighted)
    if key in _TRAINERS:
        return _TRAINERS[key]
    import tensorflow as tf

    b1, b2, eps = ADAM_BETA_1, ADAM_BETA_2, ADAM_EPSILON
    n_layers = len(hidden) + 1
    _, small_shapes = _padded_shapes(hidden)
    offsets = np.cumsum([0] + [int(np.prod(s)) for s in small_shapes])

    def adam(p, g, m, v, t, alpha, one):
        m_new = m + (g - m) * (1.0 - b1)
        v_new = v + (tf.square(g) - v) * (1.0 - b2)
        # the same values again as a separate expression (g * 1.0 == g exactly; `one` is a runtime 1.0 that XLA
        # cannot fold, so the two are not merged): the weight update then reads (g, m, v) like the moments'
        # update does instead of its results, and XLA's multi-output fusion makes one pass over p, m, v
        g1 = g * one
        m_w = m + (g1 - m) * (1.0 - b1)
        v_w = v + (tf.square(g1) - v) * (1.0 - b2)
        return p - (m_w * alpha) / (tf.sqrt(v_w) + eps), m_new, v_new

    def step(W1, small, m, v, t, lr, xb, yb, wb, count, one):
        bsz = xb.shape[0]
        parts = [tf.reshape(small[offsets[i]:offsets[i + 1]], s) for i, s in enumerate(small_shapes)]
        kernels = [W1] + parts[1::2]
        biases = parts[0::2]
        acts, zs = [xb], []
        for k in range(n_layers):
            zs.append(tf.matmul(acts[-1], kernels[k]) + biases[k])
            if k < n_layers - 1:
                acts.append(tf.nn.relu(zs[-1]))
        # d(sum of [weight x] cross-entropy over the batch's real rows / their count)/d(logits) (Keras' reduction
        # "sum_over_batch_size"); the padding rows of a partial batch get 0 (real x 1.0 == real exactly, so unit
        # weights give the same numbers as no weights)
        real = tf.cast(tf.range(bsz)[:, None] < tf.cast(count, tf.int32), tf.float32)
        delta = (tf.nn.softmax(zs[-1]) - yb) / count * (real if wb is None else real * wb[:, None])
        grads_small: list[Any] = []
        for k in range(n_layers - 1, 0, -1):
            grads_small[:0] = [tf.reshape(tf.matmul(acts[k], delta, transpose_a=True), [-1]),
                               tf.reduce_sum(delta, 0)]
            delta = tf.matmul(delta, kernels[k], transpose_b=True) * tf.cast(zs[k - 1] > 0, tf.float32)
        grads_small.insert(0, tf.reduce_sum(delta, 0))
        if bsz <= _UNROLL_MAX:  # x^T.delta as a sum of outer products, fused into its consumer
            g1 = xb[0][:, None] * delta[0][None, :]
            for r in range(1, bsz):
                g1 = g1 + xb[r][:, None] * delta[r][None, :]
        else:
            g1 = tf.matmul(xb, delta, transpose_a=True)
        t = t + 1.0
        alpha = lr * tf.sqrt(1.0 - tf.pow(b2, t)) / (1.0 - tf.pow(b1, t))
        W1, m1, v1 = adam(W1, g1, m[0], v[0], t, alpha, one)
        small, m2, v2 = adam(small, tf.concat(grads_small, 0), m[1], v[1], t, alpha, one)
        return [W1, small], [m1, m2], [v1, v2], t

    # autograph off: the loop is an explicit tf.while_loop and every Python `for`/`if` here is over static values
    @tf.function(jit_compile=True, reduce_retracing=False, autograph=False)
    def run(X, Y, W, idx, counts, n_steps, params, ms, vs, t, lr):
        one = tf.sqrt(lr) / tf.sqrt(lr)  # 1.0, unknown to the compiler

        def body(i, params, ms, vs, t):
            rows = idx[i]
            W1, small = params
            return (i + 1, *step(W1, small, ms, vs, t, lr, tf.gather(X, rows), tf.gather(Y, rows),
                                 tf.gather(W, rows) if weighted else None, counts[i],
                                 one))

        _, params, ms, vs, t = tf.while_loop(lambda i, *_: i < n_steps, body, (tf.constant(0), params, ms, vs, t))
        return params, ms, vs, t

    _TRAINERS[key] = run
    return run


def warm_up(dim: int = 2048, hidden_units: Sequence[int] = (60, 60), batch_size: int = 5,
            threads: int = 1) -> float:
    """Pay this process's one-time costs of the fast trainer before any timed training: import TensorFlow and
    Keras (pools limited to ``threads``), build a model, trace and XLA-compile the training loop for inputs of
    width ``dim`` (the compiled shapes fit every data set of up to ``_ROW_BLOCK`` rows, any epochs and learning
    rate) and run a prediction. Returns the seconds spent; 0.0 when this process has done it already."""
    key = (int(dim), tuple(int(u) for u in hidden_units), int(batch_size))
    if key in _WARM:
        return 0.0
    start = time.perf_counter()
    _tensorflow(threads)
    n = 2 * batch_size + 1  # two full batches and a partial one
    X = np.random.default_rng(0).random((n, key[0]), dtype=np.float32)
    model = build_keras_model(key[0], key[1], seed=0, threads=threads)
    train_fast(model, X, np.arange(n) % 2, epochs=1, batch_size=key[2], learning_rate=1e-3, seed=0)
    np.asarray(model(X, training=False))
    _WARM.add(key)
    return time.perf_counter() - start


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

    def prepare(self, dim: int) -> None:
        """Compile the fast trainer for inputs of width ``dim`` now (:func:`warm_up`: once per process and shape),
        so that ``fit`` times training only."""
        if self.trainer == "fast":
            warm_up(dim, self.hidden_units, self.batch_size, self.threads)

    def fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> MLPClassifier:
        """Train on rows X with gender codes y; ``sample_weight``: one finite weight >= 0 per row, applied as
        Keras' ``sample_weight`` (each row's loss times its weight, summed over the batch, divided by the batch's
        row count); None = 1 each, the same numbers as unweighted."""
        X = np.ascontiguousarray(X, dtype=np.float32)
        y = np.asarray(y)
        if X.ndim != 2 or len(X) != len(y) or len(X) == 0:
            raise InputError(f"mlp: expected a non-empty (n, d) matrix and n labels, got {X.shape} and {y.shape}")
        if not np.isin(y, (0, 1)).all():
            raise InputError("mlp: labels must be gender codes 0 (male) or 1 (female)")
        y = y.astype(np.int64)
        if sample_weight is not None:
            sample_weight = np.asarray(sample_weight, dtype=np.float64).reshape(-1)
            if sample_weight.shape != (len(X),) or not np.isfinite(sample_weight).all() \
                    or (sample_weight < 0).any():
                raise InputError(f"mlp: sample_weight must be {len(X)} finite numbers >= 0, one per row")
            sample_weight = sample_weight.astype(np.float32)
        self.model_ = build_keras_model(X.shape[1], self.hidden_units, self.seed, self.threads)
        train = fit_keras if self.trainer == "fit" else train_fast
        train(self.model_, X, y, epochs=self.epochs, batch_size=self.batch_size,
              learning_rate=self.learning_rate, seed=self.seed, sample_weight=sample_weight)
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
