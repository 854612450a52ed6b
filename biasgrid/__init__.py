"""biasgrid from Python: run a grid or load a results folder, and read its results as DataFrames.

    import biasgrid
    res = biasgrid.run("grid.toml", **{"grid.seeds": 2})     # as `biasgrid run --config grid.toml --seeds 2`
    res.matrix("mlp"); res.summaries["row_spread"]; res.sql("SELECT * FROM accuracy")
    biasgrid.load("results").report()

Errors are the command's exit codes as exceptions: InputError (2), EnvironmentFailure (3), JobsFailed (1).
Defined in grid.api (this package only re-exports it).
"""

from grid import __version__
from grid.api import Results, load, run
from grid.report import stats
from storage.errors import EnvironmentFailure, InputError, JobsFailed

__all__ = ["EnvironmentFailure", "InputError", "JobsFailed", "Results", "__version__", "load", "run", "stats"]
