"""``[run.resources]``: what each job kind's jobs ask for, and whether (and how many at once) they fit.

A kind's ask is a table of CPU (a positive integer: the CPUs each job reserves, and the threads it runs with;
default ``run.threads_per_job``), GPU, memory (bytes, or a size such as ``"4GiB"``) and custom Ray resources
(any other name), e.g. ``embed = {GPU = 1}``, ``allpairs = {CPU = 2, memory = "4GiB"}``, ``cell = {custom_x = 1}``.
The kinds are the registered job kinds and ``embed`` (the shard jobs of ``biasgrid data embed``). GPU and custom
amounts follow Ray's rule: a fraction below 1, or a whole number.

The Ray executor passes each job's ask to Ray (:func:`ray_options`); both executors keep the jobs in flight
within what the cluster or the pool offers in all (:class:`Budget`), and refuse, before any job runs, an ask
that no node (or this machine's pool) can ever hold (:func:`check_fits`: InputError naming the key).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from storage.errors import InputError

EMBED = "embed"            # the kind of `biasgrid data embed`'s shard jobs
BUILTIN_KEYS = ("CPU", "GPU", "memory")
RAY_OWN = ("object_store_memory", "node:", "accelerator_type:", "bundle_group_")   # names Ray sets itself
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*\Z")
_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?i?B?)\s*\Z", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1000, "KB": 1000, "M": 1000**2, "MB": 1000**2, "G": 1000**3, "GB": 1000**3,
          "T": 1000**4, "TB": 1000**4, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
EXAMPLE = '{CPU = 2, GPU = 1, memory = "4GiB", custom_x = 1}'
MAX_CPUS = 4096


def job_kinds() -> list[str]:
    """The kinds a config may name: every registered job kind, then ``embed``."""
    from tasks import kinds

    return [k.name for k in kinds.all_kinds()] + [EMBED]


def parse_memory(value: Any, name: str) -> int:
    """Bytes from an integer or a size such as ``"4GiB"``, ``"500MB"``, ``"2G"`` (K/M/G/T: powers of 1000;
    KiB/MiB/GiB/TiB: of 1024); InputError naming ``name`` otherwise."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = _SIZE.match(value) if isinstance(value, str) else None
    unit = match.group(2).upper() if match else ""
    if match and unit in _UNITS and (size := int(float(match.group(1)) * _UNITS[unit])) > 0:
        return size
    raise InputError(f"{name} must be a positive number of bytes or a size such as \"4GiB\" or \"500MB\", "
                     f"got {value!r}")


def _amount(value: Any, name: str) -> float:
    """A GPU or custom resource amount: a number >= 0, below 1 or whole (Ray's rule), to 4 decimals."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
    if ok and (value < 1 or float(value).is_integer()) and abs(value * 10_000 - round(value * 10_000)) < 1e-6:
        return float(value)
    raise InputError(f"{name} must be a number >= 0 that is a fraction below 1 (to 4 decimals) or a whole number, "
                     f"as Ray allows, got {value!r}")


def check_ask(kind: str, ask: Any, where: str) -> dict[str, Any]:
    """One kind's table, checked and normalised (CPU int, memory bytes, GPU and custom amounts; zeros dropped).
    ``where`` names the source ("FILE: " or an option); InputError naming ``run.resources.<kind>.<key>``."""
    known = job_kinds()
    base = f"run.resources.{kind}"
    if kind not in known:
        raise InputError(f"{where}'{base}' names no job kind; known kinds: {', '.join(known)}")
    if not isinstance(ask, Mapping):
        raise InputError(f"{where}'{base}' must be a table such as {EXAMPLE}, got {ask!r}")
    out: dict[str, Any] = {}
    for key, value in ask.items():
        name = f"{where}'{base}.{key}'"
        if key == "CPU":
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_CPUS:
                raise InputError(f"{name} must be a whole number of CPUs from 1 to {MAX_CPUS} (each job runs with "
                                 f"that many threads), got {value!r}")
            out[key] = value
        elif key == "memory":
            out[key] = parse_memory(value, name)
        elif key.lower() in {k.lower() for k in BUILTIN_KEYS} and key not in BUILTIN_KEYS:
            spelled = next(k for k in BUILTIN_KEYS if k.lower() == key.lower())
            raise InputError(f"{name} is not a resource name; did you mean {spelled}? (CPU, GPU, memory, or a "
                             f"custom Ray resource)")
        elif key.startswith(RAY_OWN) or not _NAME.match(key):
            raise InputError(f"{name} is not a resource a job can ask for: expected CPU, GPU, memory or the name "
                             f"of a custom resource (letters, digits, _ . -) that Ray does not set itself")
        elif amount := _amount(value, name):
            out[key] = amount
    return out


def resolve(given: Mapping[str, Mapping[str, Any]], threads_per_job: int) -> dict[str, dict[str, Any]]:
    """Every kind's ask: the checked ``given`` tables, CPU defaulting to ``threads_per_job``."""
    return {kind: {"CPU": threads_per_job, **given.get(kind, {})} for kind in job_kinds()}


def asks_of(resources: Mapping[str, Mapping[str, Any]], kinds: Collection[str],
            threads: int = 1) -> dict[str, dict[str, Any]]:
    """Each of ``kinds``' ask (``{"CPU": threads}`` for a kind ``resources`` does not name)."""
    return {kind: dict(resources.get(kind) or {"CPU": threads}) for kind in kinds}


def ray_options(ask: Mapping[str, Any]) -> dict[str, Any]:
    """``ray.remote(...).options`` for an ask: num_cpus, num_gpus, memory, resources (custom)."""
    custom = {k: v for k, v in ask.items() if k not in BUILTIN_KEYS}
    return {"num_cpus": ask.get("CPU", 1), "num_gpus": ask.get("GPU", 0),
            **({"memory": ask["memory"]} if "memory" in ask else {}), "resources": custom}


def _fits(ask: Mapping[str, Any], offer: Mapping[str, float]) -> bool:
    return all(offer.get(k, 0) + 1e-9 >= v for k, v in ask.items())


def _shown(offer: Mapping[str, float]) -> str:
    return "{" + ", ".join(f"{k} = {_format(k, v)}" for k, v in sorted(offer.items())
                           if not k.startswith(RAY_OWN)) + "}"


def _format(key: str, value: float) -> str:
    return f"{value / 2**30:.1f} GiB" if key == "memory" else f"{value:g}"


def check_fits(asks: Mapping[str, Mapping[str, Any]], offers: Sequence[Mapping[str, float]], what: str,
               hint: str) -> None:
    """InputError unless each kind's ask fits on at least one of ``offers`` (each node's resources, or the
    pool's), naming the key that no offer holds; ``what`` names the offers ("any node of the Ray cluster"),
    ``hint`` says what to do."""
    for kind, ask in asks.items():
        if any(_fits(ask, offer) for offer in offers):
            continue
        short = [k for k in ask if not any(_fits({k: ask[k]}, offer) for offer in offers)]
        most = {k: max([o.get(k, 0) for o in offers], default=0) for k in (short or ask)}
        named = f"'run.resources.{kind}.{short[0]}' = {_format(short[0], ask[short[0]])}" if short else \
            f"'run.resources.{kind}' = {_shown(ask)}"
        nodes = f"; its nodes offer {'; '.join(_shown(o) for o in offers) or 'nothing'}" if len(offers) > 1 else ""
        raise InputError(f"{named} is more than {what} offers (at most {_shown(most)}{nodes}); {hint}")


def local_gpus() -> int:
    """The NVIDIA GPUs this process may use: those ``CUDA_VISIBLE_DEVICES`` names, else the driver's list."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    try:
        return len(list(Path("/proc/driver/nvidia/gpus").iterdir()))
    except OSError:
        return 0


def local_offer(workers: int, threads: int) -> dict[str, float]:
    """What the local pool offers: ``workers`` x ``threads`` CPUs, this machine's GPUs and memory."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        memory = 0
    return {"CPU": workers * threads, "GPU": local_gpus(), **({"memory": memory} if memory else {})}


class Budget:
    """The resources of jobs in flight, within ``total`` (the cluster's or the pool's, summed): a job starts
    when its ask fits beside those running (:meth:`take`), and gives it back when it ends (:meth:`give`)."""

    def __init__(self, total: Mapping[str, float]) -> None:
        self.free = dict(total)

    def fits(self, ask: Mapping[str, Any]) -> bool:
        return _fits(ask, self.free)

    def take(self, ask: Mapping[str, Any]) -> None:
        for key, value in ask.items():
            self.free[key] = self.free.get(key, 0) - value

    def give(self, ask: Mapping[str, Any]) -> None:
        for key, value in ask.items():
            self.free[key] += value


class JobQueue:
    """Payloads waiting, in run order; :meth:`take` hands out the first whose kind's ask fits a budget now (a
    kind whose ask does not fit waits, and the others go on). O(number of kinds) per job."""

    def __init__(self, payloads: Sequence[Mapping[str, Any]], asks: Mapping[str, Mapping[str, Any]]) -> None:
        self.asks = asks
        self._waiting: dict[str, list[tuple[int, Mapping[str, Any]]]] = {}
        for position, payload in reversed(list(enumerate(payloads))):   # each kind's next one at its list's end
            self._waiting.setdefault(payload.get("kind", ""), []).append((position, payload))

    def __len__(self) -> int:
        return sum(len(w) for w in self._waiting.values())

    def take(self, budget: Budget) -> Mapping[str, Any] | None:
        """The next payload whose ask fits ``budget`` (reserved in it), or None."""
        ready = [(w[-1][0], kind) for kind, w in self._waiting.items() if w and budget.fits(self.asks[kind])]
        if not ready:
            return None
        kind = min(ready)[1]
        budget.take(self.asks[kind])
        return self._waiting[kind].pop()[1]


def kinds_of(payloads: Sequence[Mapping[str, Any]]) -> list[str]:
    """The kinds of ``payloads``, each once, in order."""
    return list(dict.fromkeys(p.get("kind", "") for p in payloads))
