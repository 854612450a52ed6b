"""Jobs that run remotely: plain functions from arrays and a small config to tables."""
