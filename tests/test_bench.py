"""Smoke tests of bench/: every script runs on tiny sizes and prints the lines it promises (no timing checked).

Benches import the project, so an API that moves breaks them; these tests catch it. Each script runs as a
subprocess (``python bench/x.py ARGS``) with its temporary files under the test's folder, and must exit 0,
print its figure lines, and leave no process behind (the processes it started are found by an environment
marker, ended by pid, and the test fails). A new script in bench/ fails here until its tiny arguments are
registered in ``RUNS``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import alive, end_processes

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
NUM = r"-?[\d.]+"

TINY_GRID = """
[data.synth]
identities_per_group = 30
dim = 32
[grid]
models = ["logreg"]
[protocol]
train_per_gender = 10
test_per_gender = 8
[verification]
max_impostor_pairs = 20000
bootstrap = 20
[tsne]
perplexity = 5.0
pca_dims = 10
subsets = ["all"]
"""

# Per script: its runs, each (arguments, regular expressions its standard output must match). In the arguments,
# {tmp} is the test's folder and {config} a tiny grid config (TINY_GRID) in it.
RUNS: dict[str, list[tuple[list[str], list[str]]]] = {
    "bench_allpairs": [(
        ["--identities-per-group", "3", "--dim", "16", "--workers", "1,2", "--block", "16", "--bits", "8",
         "--tail", "--tail-bits", "6", "--resamples", "2"],
        [r'"workers": 2, "shards": 2, ', r'"tail": \{"lo_score": ' + NUM, r'"resamples_defined": 2',
         r'\{"rates_of_pairs_run": \{"eer": 0\.\d+', r'\{"shardings_identical": true\}'])],
    "bench_bootstrap": [
        (["--impostors", "2000", "--identities", "60", "--resamples", "2"],
         [r'"comparisons": \d+, "genuine": \d+, "setup_s": ' + NUM + r', "per_resample_s": ' + NUM]),
        (["--job", "0,20", "--config", "{config}"],
         [r'"job": "impostor", "bootstrap": 0, .*"tables": \{"impostor_matrix": 36, "demographic_rates": 6',
          r'"job": "impostor", "bootstrap": 20, .*"verification_ci": \d+',
          r'"job": "scores", "bootstrap": 20, .*"tables": \{"verification": 1, ']),
        (["--floors", "--config", "{config}", "--resamples", "4", "--old-resamples", "2"],
         [r'"job": "impostor", "form": "one at a time", .*"resamples": 2, .*"total_4_s": ' + NUM,
          r'"job": "impostor", "form": "batched", .*"resamples": 4, .*"floor_s": 3\.0, "under_floor": ',
          r'"job": "scores", "form": "batched", .*"floor_s": 1\.0, ',
          r'"job": "impostor", "resamples_compared": 2, "same_nan": true, "max_abs_difference": 0\.0\}',
          r'"job": "scores", "resamples_compared": 2, "same_nan": true, "max_abs_difference": 0\.0\}']),
    ],
    "bench_embed": [(
        ["--dlib-images", "2", "--keras-images", "2", "--workers", "1", "--keras-model", "small"],
        [r"^dlib \(detect\+align\+embed\)\s+workers 1:\s+2 images in\s+" + NUM + r" s =\s+" + NUM + " images/s",
         r"^keras small 32px 16-d\s+workers 1:\s+2 images in\s+" + NUM + r" s =\s+.* peak RSS per worker \d+ MB"])],
    "bench_faults": [(
        ["--kills", "1", "--executors", "local", "--max-delay", "1.0", "--seeds", "1", "--models", "logreg"],
        [r"^\s+0\s+local SIGKILL\s+1\.0\s+(True|False)\s+0\s+0\s+0\s+\d+\s+0$",
         r"^1 kills \(\d before the run ended\), reruns exiting 0: 1; totals: \{'rows_lost': 0, "
         r"'rows_duplicated': 0, 'processes_left': \d+, 'temp_files_left': 0\}"])],
    "bench_grid": [(
        ["--executor", "local", "--workers", "2", "--seeds", "1", "--config", "{config}", "--out", "{tmp}/out"],
        [r"^executor=local workers=2 jobs=9 failed=0$", r"^  cell logreg\s+n=  4  mean\s+" + NUM,
         r"^  impostor\s+n=  1 ", r"^  scores\s+n=  3 ", r"^  tsne\s+n=  1 ",
         r"^wall / \(sum / workers\):\s+" + NUM + "$", r"^workers x wall - job time\s+" + NUM + " s"])],
    "bench_memory": [(
        ["--config", "{config}", "--mib", "8", "--waits", "0", "--repeat", "1"],
        [r"^  8 MiB written, huge pages , first touch +" + NUM + " s",
         r"^  8 MiB written, 4 KiB pages, again, +0 s after the free",
         r"^  scores,impostor jobs \(\d+\), malloc plain, huge pages : wall +" + NUM,
         r"^  scores,impostor jobs \(\d+\), malloc kept , huge pages : wall +" + NUM,
         r"^  scores,impostor jobs \(\d+\), malloc plain, 4 KiB pages: wall +" + NUM])],
    "bench_mitigation": [(
        ["--identities-per-group", "12", "--dim", "16", "--train-per-gender", "6", "--test-per-gender", "4",
         "--clusters", "3", "--max-impostor-pairs", "2000", "--reductions-iter", "3"],
        [r"^classifier side: 36 train rows x 16, 8 test rows, model logreg$",
         *(rf"^  {m:<20} fit\s+{NUM} s   predict\s+{NUM} s   accuracy [01]\.\d{{3}}$"
           for m in ("none", "reweight", "reductions", "threshold_optimizer", "erase")),
         r"^score side: fitted on \d+ images of 36 identities x 16; applied to \d+ pairs of \d+ images$",
         *(rf"^  {m:<20} fit\s+{NUM} s   apply\s+{NUM} s   scores {NUM}\.\.{NUM}$"
           for m in ("group_thresholds", "fsn", "faircal", "znorm"))])],
    "bench_mlp": [(
        ["--seeds", "1", "--epochs", "1", "--repeats", "1"],
        [r"^TensorFlow import: " + NUM + r" s .* warm_up again: 0\.00 s$",   # compiled once, by prepare
         r"^seed 0: fit\s+" + NUM + r" s \(cpu\s+" + NUM + r"\) acc 0\.\d{3} \| fast\s+" + NUM,
         r"^mean test accuracy over 1 seeds: fit [01]\.\d{4}, fast [01]\.\d{4}, difference [+-][01]\.\d{4}$"])],
    "bench_mlp_bound": [(
        ["--repeats", "1", "--tiny"],
        [r"^  numpy copy 1\.5 MiB -> 1\.5 MiB\s+" + NUM + " us per 2048 x 64, " + NUM + " GB/s$",
         r"^  XLA sqrt \+ divide \(1 x r\+w\)\s+" + NUM + " us per iteration",
         r"^  loop body \S+: \d+ kernels \(fusions, dots, copies\) per step, " + NUM + " MiB",
         r"^  trainer step, 2048-d input\s+" + NUM + r" us per step .* per 200 steps$",
         r"^  Adam of W1 alone, one pass\s+" + NUM + " us per step",
         r"^  4 model\(s\) in one loop:\s+" + NUM + " us per model-step",
         r"^  => floor ~ max\(memory, sqrt\+divide\) \+ rest = " + NUM + " us per step; measured " + NUM])],
    "bench_peers": [(
        ["--seeds", "1", "--models", "logreg", "--workers", "2", "--config", "{config}", "--no-hidden"],
        [*(rf"^  run 1: {peer}: {NUM} s \+ close {NUM} s \(jobs 4/4, " for peer in ("local", "ray", "joblib", "tune")),
         r"^4 jobs \(logreg, seeds 1\), 2 workers; median of 1 run\(s\)",
         r"^joblib \(loky\)\s+" + NUM + r"\s+1\.00\s+" + NUM, r"^Ray Tune\s+" + NUM + r"\s+" + NUM])],
    "bench_ray_start": [(
        ["--repeat", "1", "--workers", "1"],
        [r'^\{"node_start_s": ' + NUM + ', "connect_s": ' + NUM + ', "first_tasks_s": ' + NUM
         + ', "shutdown_and_stop_s": ' + NUM + r"\} load " + NUM + "$"])],
    "bench_ray_up": [(["--dry-run"], [r"^ok: cluster\.yaml with the local provider passes Ray's validation"])],
    "bench_report": [(
        ["--identities-per-group", "20", "--dim", "32", "--resamples", "30", "--shards", "2", "--bootstrap-jobs", "3",
         "--protocol", "6,4", "--check"],
        [r'"run_s": ' + NUM + r', .*"allpairs_bootstrap": \{"jobs": 3, ', r'"allpairs_replicates": \{"rows": \d+, ',
         r'\{"report_s": ' + NUM + r', "report_peak_mib": ' + NUM + r'\}',
         r'"max_abs_difference_vs_one_process": 0\.0\}'])],
    "bench_scores": [(
        ["--identities", "20", "--small-identities", "10", "--impostor-identities", "12", "--dim", "16",
         "--max-impostor-pairs", "2000"],
        [r"^  \d+ images x 16, 20 identities: \d+ genuine, \d+ impostor pairs \(sampled=(True|False)\); wall .*"
         r" EER 0\.\d{4}, FNMR@FMR=1e-3 [01]\.\d{4}$",
         r"^  \d+ images x 16, 10 identities: \d+ genuine",
         r"^  impostor_matrix: \d+ images x 16, 12 identities in 6 groups, \d+ impostor pairs; .* FMR per group"])],
    "bench_synth": [(
        ["--seeds", "1", "--param", "identities_per_group=30", "--param", "dim=16", "--train-per-gender", "10",
         "--test-per-gender", "8"],
        [r"^generate: " + NUM + r" s on one thread; \d+ rows x 16, 180 identities",
         r"^gender accuracy, logreg, mean ± std over 1 seeds$", r"^gender accuracy, mlp\(60,60\), ",
         r"^all(\s+[01]\.\d{3} ± 0\.\d{3}){3}$", r"^black\s+\d+\.\d{2}%\s+-?[01]\.\d{3}\s+-?[01]\.\d{3}$"])],
    "bench_scale": [(
        ["--smoke", "--resamples", "2"],
        [r'^\{"point": "30x16", "rows": \d+, .*"driver": \{"read": \{"seconds": ' + NUM,
         r'"allpairs": \{"shards": \d+, .*"cpu_s_per_1e9": ' + NUM + r'.*"tail_parquet_bytes_per_row": ' + NUM,
         r"^d = 16: [\d,]+ -> [\d,]+ rows, projected to 1,300,000:$",
         r"^  tail rows \(all pairs\): .* \(growth n\^" + NUM + r"\); at 1,300,000: ",
         r"^  allpairs at 1,300,000: .* / 64 cores = " + NUM])],
    "bench_table": [(
        ["--identities-per-group", "3", "--dim", "8"],
        [r"^table: \d+ rows x 8 dim, matrix \d+ MiB", r"^write_table: " + NUM + " s$",
         r"^read_table run 2: " + NUM + r" s; peak RSS \d+ MiB = baseline \d+ \+ -?\d+ MiB", r"^fingerprint: "])],
    "bench_tsne": [(
        ["--sizes", "60", "--iterations", "260"],
        [r"^60 x 2048: PCA to 50 dims " + NUM + " s$",
         *(rf"^  {name}\s+wall\s+{NUM} s, cpu\s+{NUM} s; trustworthiness [01]\.\d{{3}}, silhouette of the 6 "
           rf"groups -?[01]\.\d{{3}}$" for name in (r"scikit-learn TSNE \(Barnes-Hut\)", r"openTSNE \(Barnes-Hut\)",
                                                    r"openTSNE \(FFT\)")),
         r"^  tasks\.kinds\.tsne\.tsne_job \(subset all\)\s+wall\s+" + NUM])],
}

# Scripts that need packages beyond the project's own: (package to install, modules it brings). All are in the
# `test` extra (pyproject.toml), so they run in CI; an environment without them skips with the package's name.
NEEDS = {"bench_tsne": [("openTSNE", ["openTSNE"])],
         "bench_peers": [("ray[tune]", ["ray.tune", "fsspec", "tensorboardX"])],
         "bench_embed": [("dlib-bin", ["dlib"]), ("scikit-image", ["skimage"])]}

# Output of a C compiler's path that a script takes only where cc (or gcc) is present.
COMPILED = {"bench_mlp_bound": r"^  C, hand-written \(bench/divider\.c\): (8|16)-wide vectors: sqrt " + NUM
            + " us, divide " + NUM + r" us, .* fused Adam step of the first layer \(one pass\): " + NUM + " us$"}


def marked(token: str) -> list[int]:
    """Live processes whose environment carries ``BENCH_SMOKE=token`` (the bench's and every one below it)."""
    mark = f"BENCH_SMOKE={token}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                environ = Path(f"/proc/{entry}/environ").read_bytes()
            except OSError:
                continue
            if mark in environ.split(b"\0") and alive(int(entry)):
                found.append(int(entry))
    return found


def run_bench(script: Path, args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    """Run ``script ARGS`` with its temporary files under ``tmp``; AssertionError if a process it started
    outlives it by 20 s (those are ended first)."""
    token = uuid.uuid4().hex
    (tmp / "temp").mkdir(exist_ok=True)
    env = {**os.environ, "BENCH_SMOKE": token, "TMPDIR": str(tmp / "temp"), "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    try:
        done = subprocess.run([sys.executable, str(script), *args], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=900)
    finally:
        deadline = time.time() + 20
        while time.time() < deadline and marked(token):
            time.sleep(0.2)
        left = marked(token)
        end_processes(left, grace=10.0)
    assert not left, f"{script.name} left processes running 20 s after it ended: {left}"
    return done


@pytest.mark.parametrize("script", sorted(BENCH.glob("*.py")), ids=lambda p: p.stem)
def test_bench_runs_tiny(script: Path, tmp_path: Path) -> None:
    runs = RUNS.get(script.stem)
    if runs is None:
        pytest.fail(f"bench/{script.name} has no tiny-size arguments registered in tests/test_bench.py RUNS")
    for package, modules in NEEDS.get(script.stem, []):
        missing = [m for m in modules if importlib.util.find_spec(m) is None]
        if missing:
            pytest.skip(f"{package} is not installed (no module {missing[0]}): pip install -e '.[test]'")
    config = tmp_path / "tiny.toml"
    config.write_text(TINY_GRID)
    compiler = shutil.which("cc") or shutil.which("gcc")
    for args, expected in runs:
        args = [a.format(tmp=tmp_path, config=config) for a in args]
        done = run_bench(script, args, tmp_path)
        shown = f"{script.name} {' '.join(args)}\n--- stdout\n{done.stdout[-4000:]}\n--- stderr\n{done.stderr[-4000:]}"
        assert done.returncode == 0, f"exit {done.returncode}: {shown}"
        if compiler and script.stem in COMPILED:
            expected = [*expected, COMPILED[script.stem]]
        for pattern in expected:
            assert re.search(pattern, done.stdout, re.M), f"no line matches {pattern!r}: {shown}"
    if not compiler and script.stem in COMPILED:
        pytest.skip(f"no C compiler (cc or gcc): the bench/divider.c path of {script.name} is not covered")


def test_every_registered_bench_exists() -> None:
    assert sorted(RUNS) == sorted(p.stem for p in BENCH.glob("*.py"))
    assert set(NEEDS) | set(COMPILED) <= set(RUNS)
