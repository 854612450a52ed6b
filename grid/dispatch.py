"""The one dispatch loop of the driver: run payloads on an executor and store each result the moment it arrives,
with a progress bar. Used by the grid runner (``grid.runner``: jobs) and the embedding pipeline (``grid.embed``:
shards); each caller decides first what is stored already and passes only the rest."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from tasks.runtime import Outcome


def say(enabled: bool, text: str) -> None:
    """A line on stderr for the person at the terminal (nothing when ``enabled`` is false)."""
    if enabled:
        print(text, file=sys.stderr, flush=True)


def progress_bar(total: int, enabled: bool, unit: str = "job") -> Any:
    """A tqdm bar on stderr counting ``unit``s (disabled when ``enabled`` is false)."""
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, file=sys.stderr, disable=not enabled, dynamic_ncols=True,
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} " + unit + "s [{elapsed}<{remaining}{postfix}]")


def dispatch(executor: Any, payloads: Sequence[Mapping[str, Any]], data: Mapping[str, np.ndarray],
             store: Callable[[Outcome], bool], *, progress: bool, unit: str = "job") -> int:
    """Run ``payloads`` on ``executor`` (its ``run(payloads, data)`` yields Outcomes as jobs finish) and call
    ``store(outcome)`` for each as it arrives: it stores the result or the failure and returns True for a failed
    job. Returns how many failed."""
    failed = 0
    bar = progress_bar(len(payloads), progress, unit)
    outcomes = executor.run(payloads, data)
    try:
        for outcome in outcomes:
            failed += bool(store(outcome))
            bar.update(1)
            bar.set_postfix(failed=failed, refresh=False)
    finally:   # on an error too (a full disk): the executor stops handing out jobs before it is closed
        outcomes.close()
        bar.close()
    return failed
