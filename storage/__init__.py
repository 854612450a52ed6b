"""Reading and writing Parquet: the embedding table and the results store.

``storage.load("results")`` returns a results folder's tables as pandas DataFrames, by table name.
"""

from storage.results import load

__all__ = ["load"]
