"""biasgrid orchestration: config, plan, executors, aggregation and the command line."""

__version__ = "0.1.0"
