"""Reading and writing Parquet: the embedding table and the results store."""
