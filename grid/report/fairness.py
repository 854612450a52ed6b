"""The group aggregators of the report (range, std, SER, Max/Min, Max/GeoMean, Gini, FDR, GARBE, WERM).

Their single home is :mod:`tasks.stats.fairness` (pure numpy/pandas), so that the impostor-matrix job can bootstrap
the differential summaries in a worker (workers get ``tasks/`` and ``storage/`` only); this module re-exports them
for the report.
"""

from tasks.stats.fairness import (DEFAULT_A, METRICS, by_seed, fdr, garbe, gini, group_std,  # noqa: F401
                                  max_geomean_ratio, max_min_ratio, skewed_error_ratio, summaries, summarize,
                                  value_range, werm)
