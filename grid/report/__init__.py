"""The report of a results folder: loading (``results``), statistics (``stats``), group aggregators
(``fairness``), figures (``figures``), the document (``document``) and its renderers (``render``).

    from grid.report import load_results, stats, write_report
    res = load_results("results")
    stats.accuracy_matrix(res, "mlp")
    write_report(res)                            # -> results/report/report.html
"""

from grid.report.results import Results, load_results
from grid.report import stats
from grid.report.document import write_report

__all__ = ["Results", "load_results", "stats", "write_report"]
