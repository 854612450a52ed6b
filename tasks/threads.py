"""Keep a job inside its thread budget, so that N jobs on N cores never oversubscribe them.

``limit_threads(n)`` covers every pool a job can use:

- BLAS/OpenMP libraries already loaded (OpenBLAS under numpy/scipy, libgomp under scikit-learn and XGBoost):
  through threadpoolctl; libraries loaded later read the ``*_NUM_THREADS`` environment variables set here.
- TensorFlow: intra-op pool = n threads, inter-op pool = 1 (a job runs one graph at a time). TensorFlow fixes
  its pools when its runtime starts, once per process. Before that, the limit is set (directly if TensorFlow is
  imported, else through ``TF_NUM_INTRAOP_THREADS``/``TF_NUM_INTEROP_THREADS``, which it reads at start-up).
  After that, asking again for the same n is a no-op and asking for another n keeps the pools it has and logs a
  warning once: a reused worker process keeps working.
- XGBoost: its ``n_jobs`` is set from the same budget by :func:`tasks.models.build_model`.
"""

from __future__ import annotations

import logging
import os
import sys

from storage.errors import InputError

_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
             "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "TF_NUM_INTRAOP_THREADS")
_log = logging.getLogger(__name__)
_warned: set[int] = set()


def limit_threads(n: int) -> None:
    """Make TensorFlow, XGBoost and BLAS/OpenMP in this process use at most ``n`` threads."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"threads must be a positive integer, got {n!r}")
    if "tensorflow" in sys.modules:
        limit_tensorflow_threads(n)
    for var in _ENV_VARS:
        os.environ[var] = str(n)
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n)


def limit_tensorflow_threads(n: int) -> int:
    """Set TensorFlow's pools to ``n`` intra-op / 1 inter-op thread if it can still be done (call it before
    TensorFlow runs its first op). Return the intra-op thread count in force, 0 meaning all cores."""
    import tensorflow as tf

    threading = tf.config.threading
    try:
        threading.set_intra_op_parallelism_threads(n)
        threading.set_inter_op_parallelism_threads(1)
        return n
    except RuntimeError:  # the runtime has started in this process: its pools stay as they are
        current = threading.get_intra_op_parallelism_threads() or int(os.environ.get("TF_NUM_INTRAOP_THREADS", 0))
        if current != n and current not in _warned:
            _warned.add(current)
            _log.warning("TensorFlow already runs in this process with %s intra-op threads; keeping them "
                         "(asked for %d)", current or "all", n)
        return current
