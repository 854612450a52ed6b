"""The statistics of loaded results, as the notebook API (``grid.report.stats.*``): a façade over the report's
sections (``grid.report.sections``, one module per topic), where each function is defined.

    >>> from grid.report import load_results, stats
    >>> res = load_results("results")
    >>> stats.accuracy_matrix(res, "mlp")                     # train group x test group, mean over seeds
    >>> stats.matrix_text(res, "mlp")                         # the same as "0.951 ± 0.004" strings
    >>> stats.paired_differences(res)                         # off-diagonal cell - same-group cell, CI and p
    >>> stats.mitigation_summaries(res)["mitigation_gaps"]    # each mitigation - none, paired by seed (NB, Holm)

Every function takes loaded :class:`~grid.report.results.Results` (never a path). Rows and columns follow the
config's order (train groups as configured with ``all`` last, test groups as configured). Only rows of planned
jobs that the ledger marks done are used. Standard deviations over seeds use ddof=1. Formulas: docs/REPORT.md.
"""

# ruff: noqa: F401
from grid.report.document import (all_summaries)
from grid.report.results import (demographic_groups)
from grid.report.sections.allpairs import (ALLPAIRS_INTERVAL_COLUMNS, allpairs_intervals, allpairs_intervals_note,
                                           allpairs_summary)
from grid.report.sections.bias import (best_train_group, row_spread)
from grid.report.sections.equalized_odds import (equalized_odds)
from grid.report.sections.intervals import (group_eer_summary, impostor_interval_matrix, interval_text,
                                            operating_points_summary, shown_intervals, verification_intervals)
from grid.report.sections.jobs import (job_status)
from grid.report.sections.matrices import (MARK, METRICS, accuracy_matrix, accuracy_stats, format_cell,
                                           incomplete_cells, matrix_text, missing_cells)
from grid.report.sections.mitigation import (cell_values, classifier_gaps, classifier_values, group_fnmr_values,
                                             impostor_values, mitigation_methods, mitigation_summaries,
                                             paired_with_none, plot_tradeoff, score_values, tradeoff,
                                             verification_gaps, verification_sizes, with_none)
from grid.report.sections.paired import (holm, paired_differences, paired_test)
from grid.report.sections.pairs import (pair_protocol)
from grid.report.sections.verification import (VERIFICATION_METRICS, bounded_fairness_by_seed,
                                               demographic_rates_summary, fairness_by_seed, fairness_summary,
                                               impostor_fmr_matrix, verification_summary)
