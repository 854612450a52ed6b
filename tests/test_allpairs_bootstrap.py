"""The identity bootstrap over every pair's tail counts, wired: the tail's choice, the stored tails of a real grid
against brute force over every pair, the report's intervals against tail_bootstrap on a brute-force tail and
against a direct resampling loop over all comparisons, and the report through the command line.

The tables here score exactly: every entry is +-1/8 in 64 dimensions, so every row has norm 1 exactly and every
score is a multiple of 1/32 computed exactly in float32 whatever the BLAS kernel, so brute force in float64 sees
the very scores the jobs bin (and many lie on bin edges).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from grid.config import resolve_config
from grid.report import load_results, stats
from grid.runner import run_grid, shared_arrays
from tasks.runtime import row_groups
from storage.errors import InputError
from storage.table import EmbeddingTable, write_table
from storage.attributes import default_groups
from tasks.stats import allpairs, bootstrap, fairness
from tasks.stats import allpairs_rates
from tasks.kinds import allpairs as allpairs_kind

# Under xdist this module's tests run on one worker: its module fixture (cli_grid, covering_grid) is built once.
pytestmark = pytest.mark.xdist_group("allpairs_bootstrap")

REPO = Path(__file__).resolve().parents[1]
SEED = 2
TARGET = 1e-2


def exact_table(ids_per_group: int, images: int = 3, dim: int = 64, seed: int = 0) -> EmbeddingTable:
    """4 groups (asian/caucasian x male/female); identity centres lean towards their group's sign pattern, each
    image flips 12% of its centre's signs; entries +-1/8 (norm 1, exact scores)."""
    rng = np.random.default_rng(seed)
    pattern = rng.choice([-1, 1], size=(4, dim))
    X, ident, image, eth, gen = [], [], [], [], []
    for g in range(4):
        for i in range(ids_per_group):
            centre = np.where(rng.random(dim) < 0.6, pattern[g], rng.choice([-1, 1], dim))
            for m in range(images):
                X.append(np.where(rng.random(dim) < 0.12, -centre, centre) / 8.0)
                ident.append(f"g{g}_{i:04d}")
                image.append(f"img{m}")
                eth.append(g // 2)
                gen.append(g % 2)
    return EmbeddingTable(np.ascontiguousarray(np.array(X, np.float32)), np.array(ident, dtype=object),
                          np.array(image, dtype=object), np.array(eth, np.int8), np.array(gen, np.int8),
                          ("asian", "caucasian", "black"))


class Brute:
    """Every pair i < j of a table scored in float64 (exact here), with identities, groups and coarse bins."""

    def __init__(self, table: EmbeddingTable, bits: int):
        X = np.asarray(table.embeddings, np.float64)
        i, j = np.triu_indices(len(X), 1)
        self.s = (X @ X.T)[i, j]
        self.ida, self.idb = table.identity_codes()[i], table.identity_codes()[j]
        groups = default_groups(table).per_row().astype(str)
        self.names = sorted(set(groups))
        code = np.array([self.names.index(g) for g in groups])
        self.ga, self.gb = code[i], code[j]
        self.gen = self.ida == self.idb
        self.bits, self.nb = bits, allpairs.n_bins(bits)
        self.bin = np.clip(np.floor(self.s * 2.0 ** bits).astype(np.int64) + 2 ** bits, 0, self.nb - 1)
        n_id = int(table.identity_codes().max()) + 1
        self.id_group = np.zeros(n_id, np.int64)
        self.id_group[table.identity_codes()] = code
        self.images = np.bincount(table.identity_codes(), minlength=n_id)

    def tail(self, lo_bin: int) -> allpairs.TailCounts:
        """The tail counted per (identity pair, bin) and (identity, bin) by np.unique over the pairs."""
        imp = ~self.gen & (self.bin >= lo_bin)
        a, b = np.minimum(self.ida, self.idb)[imp], np.maximum(self.ida, self.idb)[imp]
        rows, cnt = np.unique(np.c_[a, b, self.bin[imp]], axis=0, return_counts=True)
        grows, gcnt = np.unique(np.c_[self.ida[self.gen], self.bin[self.gen]], axis=0, return_counts=True)
        return allpairs.TailCounts(self.bits, lo_bin, rows[:, 0], rows[:, 1], rows[:, 2], cnt.astype(np.int64),
                                   grows[:, 0], grows[:, 1], gcnt.astype(np.int64))

    def resample(self, m: np.ndarray, target: float) -> dict[tuple, float]:
        """Every statistic of one resample by direct weighted counting over ALL comparisons: impostor (i, j)
        weighs m_i m_j, genuine of i weighs m_i; threshold = smallest coarse edge with weighted impostors >= it
        <= floor(target N)."""
        w = np.where(self.gen, m[self.ida], m[self.ida] * m[self.idb]).astype(np.int64)
        imp = ~self.gen
        hist = np.bincount(self.bin[imp], weights=w[imp], minlength=self.nb)
        acc = np.r_[np.cumsum(hist[::-1])[::-1], 0]
        n = int(w[imp].sum())
        t = Fraction(repr(target))
        k = int(np.argmax(acc <= t.numerator * n // t.denominator))
        out: dict[tuple, float] = {("threshold", "all", "", ""): -1.0 + k * 2.0 ** -self.bits}
        G = len(self.names)
        fmr, fnmr = np.zeros(G), np.zeros(G)
        for g, name in enumerate(self.names):
            sel = imp & (self.ga == g) & (self.gb == g)
            fmr[g] = w[sel & (self.bin >= k)].sum() / w[sel].sum()
            sel = self.gen & (self.ga == g)
            fnmr[g] = w[sel & (self.bin < k)].sum() / w[sel].sum()
            out[("group_fmr", name, "", "")], out[("group_fnmr", name, "", "")] = fmr[g], fnmr[g]
        for g in range(G):
            for h in range(g + 1, G):
                sel = imp & (((self.ga == g) & (self.gb == h)) | ((self.ga == h) & (self.gb == g)))
                out[("cross_fmr", self.names[g], self.names[h], "")] = w[sel & (self.bin >= k)].sum() / w[sel].sum()
        table = fairness.summaries(fmr, fnmr)
        for metric, value in zip(table["metric"], table["value"]):
            out[("summary", "", "", metric)] = float(value)
        return out


def keyed(frame: pd.DataFrame) -> pd.DataFrame:
    keys = ["quantity", "group_a", "group_b", "metric"]
    return frame.assign(**{c: frame[c].fillna("").astype(str) for c in keys}).set_index(keys).sort_index()


# ------------------------------------------------------------------------------------- choosing the tail ---
def payload(shard: int, n_shards: int, factor: float = 10.0, bits: int = 10) -> dict:
    return {"seed": SEED, "params": {"shard": shard, "n_shards": n_shards, "bits": allpairs.DEFAULT_BITS,
                                     "tail": {"bits": bits, "fmr_factor": factor, "target_fmr": TARGET}}}


@pytest.fixture(scope="module")
def big() -> EmbeddingTable:
    return exact_table(184)           # 2208 rows: two row blocks of 2048, three block tasks


def test_lower_score_is_the_same_for_every_shard_and_sharding(big):
    data = shared_arrays(big)
    brute = Brute(big, 10)
    summed = {}
    for n_shards in (1, 2, 3, 5):       # 5 shards: two of them get no block at all
        outs = [allpairs_kind.run(payload(k, n_shards), data) for k in range(n_shards)]
        tail = pd.concat([o["allpairs_tail"] for o in outs], ignore_index=True)
        assert set(outs[0]["allpairs_identities"]["lo_bin"]) == set(tail["lo_bin"]) and tail["lo_bin"].nunique() == 1
        assert all("allpairs_identities" not in o for o in outs[1:])
        t, *_ = allpairs_rates.tail_from_rows(tail, outs[0]["allpairs_identities"])
        summed[n_shards] = t
    ref = summed[1]
    for t in summed.values():
        assert t.lo_bin == ref.lo_bin and all(np.array_equal(getattr(t, f), getattr(ref, f))
                                              for f in allpairs._TAIL_FIELDS)
    # the documented rule, recomputed: k rows drawn with the seed, the convention's threshold at FMR = 10 x 1e-2
    # over their impostor pairs, one 2^-10 bin below it
    x = 10 * TARGET
    k = math.ceil((1 + math.sqrt(1 + 8 * math.ceil(100 / x))) / 2)
    rows = np.sort(np.random.default_rng(SEED).choice(len(big.embeddings), size=k, replace=False))
    X = np.asarray(big.embeddings[rows], np.float64)
    i, j = np.triu_indices(k, 1)
    ids = big.identity_codes()[rows]
    imp = (X @ X.T)[i, j][ids[i] != ids[j]]
    m = int(Fraction(repr(x)) * len(imp))
    t = min(v for v in np.unique(imp) if (imp >= v).sum() <= m)
    assert ref.lo_bin == math.floor(t * 2 ** 10) + 2 ** 10 - 1
    assert allpairs.tail_lower_score(allpairs_kind.NormalisedRows(big.embeddings), big.identity_codes(), TARGET,
                                     seed=SEED) == allpairs.bin_edges(10)[ref.lo_bin]
    # and the sum of the shards' tails is every pair's tail from that bin, by brute force
    want = brute.tail(ref.lo_bin)
    assert all(np.array_equal(getattr(ref, f), getattr(want, f)) for f in allpairs._TAIL_FIELDS)


def test_tail_choice_edge_cases():
    t = exact_table(3)
    X, ids = allpairs_kind.NormalisedRows(t.embeddings), t.identity_codes()
    assert allpairs.tail_lower_score(X, ids, 0.2, factor=5.0) == -1.0        # FMR 1: everything
    lo = allpairs.tail_lower_score(X, ids, 1e-2, bits=6)
    assert lo in allpairs.bin_edges(6) and -1.0 <= lo < 1.0
    for bad in (0.5, float("nan"), True):
        with pytest.raises(InputError, match="factor"):
            allpairs.tail_lower_score(X, ids, 1e-2, factor=bad)
    with pytest.raises(InputError, match="finer"):            # the tail's bins cannot be finer than the counts'
        allpairs.shard_counts(X, ids, np.zeros(len(ids), int), 1, [(0, 4, 0, 4)], 8,
                              tail=allpairs.TailCounts.empty(10, lo_bin=0))


def test_tails_with_different_lower_bins_are_cut_at_the_highest(big):
    """Shards that chose different lower bins (different BLAS in the last bits) still sum exactly from the
    highest one, with a note."""
    data = shared_arrays(big)
    brute = Brute(big, 10)
    lo = allpairs_kind.run(payload(0, 1), data)["allpairs_tail"]["lo_bin"].iloc[0]
    parts = []
    for shard, start in enumerate((lo - 3, lo, lo - 1)):
        tail = allpairs.TailCounts.empty(10, lo_bin=start)
        allpairs_kind.count_shard(big.embeddings, big.identity_codes(), row_groups(data), shard, 3,
                                  tail=tail)
        parts.append(allpairs_kind.tail_rows(tail, shard, 3))
    identities = allpairs_kind.identity_rows(big.identity_codes(), row_groups(data), 0, 3, 10, lo - 3)
    t, group, images, names, note = allpairs_rates.tail_from_rows(pd.concat(parts), identities)
    want = brute.tail(lo)
    assert t.lo_bin == lo and all(np.array_equal(getattr(t, f), getattr(want, f)) for f in allpairs._TAIL_FIELDS)
    assert f"cut at bin {lo}" in note
    assert np.array_equal(group, brute.id_group) and np.array_equal(images, brute.images) and names == brute.names


def test_undefined_resamples_are_those_whose_threshold_falls_below_the_tail():
    """A tail starting at the median resample's threshold: the resamples whose direct threshold is not above its
    lower edge are NaN, the others equal direct counting over all comparisons."""
    brute = Brute(exact_table(40, seed=3), 10)
    R = 60
    direct = [brute.resample(m, TARGET) for m in bootstrap.identity_multiplicities(brute.id_group, R, 5)]
    median = sorted(d[("threshold", "all", "", "")] for d in direct)[R // 2]
    lo = int(round((median + 1) * 2 ** 10))
    out = keyed(allpairs_rates.tail_bootstrap(brute.tail(lo), brute.id_group, brute.images, brute.names,
                                        global_target_fmr=TARGET, n_resamples=R, seed=5,
                                        summarize=fairness.summaries))
    covered = np.array([d[("threshold", "all", "", "")] > allpairs.bin_edges(10)[lo] for d in direct])
    assert 0 < covered.sum() < R                     # the test needs both kinds of resample
    for key, row in out.iterrows():
        values = np.array([d[key] for d, c in zip(direct, covered) if c])
        ok = values[~np.isnan(values)]
        assert row.n_defined == len(ok)
        assert (row.ci_low, row.ci_high) == pytest.approx(tuple(np.quantile(ok, [0.025, 0.975])), abs=1e-12)
    assert out["note"].str.contains(f"undefined in {R - covered.sum()} of {R} resamples").all()


# ----------------------------------------------------------------------------------------- the wired grid ---
CONFIG = """
[data]
path = "{data}"
[grid]
seeds = [{seed}]
models = ["logreg"]
[protocol]
train_per_gender = 4
test_per_gender = 3
[verification]
target_fmr = {target}
target_fmrs = [1e-1, 1e-2]
bootstrap = {resamples}
identities = "all"
allpairs_shards = 3
{extra}
[tsne]
enabled = false
[run]
executor = "local"
workers = 2
report = {report}
"""


@pytest.fixture(scope="module")
def cli_grid(tmp_path_factory, big):
    """The 2208-row table through `python -m grid.cli run` (3 shards, the default tail, 200 resamples)."""
    tmp = tmp_path_factory.mktemp("tail")
    write_table(big, tmp / "t.parquet")
    (tmp / "grid.toml").write_text(CONFIG.format(data=tmp / "t.parquet", seed=SEED, target=TARGET, resamples=200,
                                                 extra="", report="true"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "grid.cli", "run", "--config", str(tmp / "grid.toml"), "--out",
                           str(tmp / "r"), "--quiet"], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    return tmp / "r"


def test_stored_tails_sum_to_every_pairs_tail(cli_grid, big):
    tail = pd.read_parquet(cli_grid / "allpairs_tail")
    identities = pd.read_parquet(cli_grid / "allpairs_identities")
    assert sorted(tail["shard"].astype(int).unique()) == [0, 1, 2]          # every shard counted a block
    assert tail["lo_bin"].nunique() == 1 and set(identities["lo_bin"]) == set(tail["lo_bin"])
    assert set(tail["bits"]) == {10} and (tail["count"] > 0).all()
    lo = int(tail["lo_bin"].iloc[0])
    brute = Brute(big, 10)
    assert brute.s[~brute.gen].min() < allpairs.bin_edges(10)[lo] < brute.s[~brute.gen].max()   # a real tail
    # summed over shards, per (identity pair, bin) and (identity, bin): brute force over every pair
    key = ["kind", "identity_a", "identity_b", "bin"]
    stored = tail.groupby(key)["count"].sum()
    want = brute.tail(lo)
    expected = pd.concat([
        pd.DataFrame({"kind": "genuine", "identity_a": want.gen_id, "identity_b": want.gen_id, "bin": want.gen_bin,
                      "count": want.gen_count}),
        pd.DataFrame({"kind": "impostor", "identity_a": want.imp_a, "identity_b": want.imp_b, "bin": want.imp_bin,
                      "count": want.imp_count})]).set_index(key)["count"].sort_index()
    pd.testing.assert_series_equal(stored.sort_index(), expected, check_dtype=False)
    assert stored.xs("impostor").sum() == (~brute.gen & (brute.bin >= lo)).sum()
    ids = identities.sort_values("identity")
    assert np.array_equal(ids["n_images"], brute.images)
    assert ids["group"].map(brute.names.index).tolist() == brute.id_group.tolist()


def test_report_intervals_are_the_tail_bootstrap_of_the_brute_force_tail(cli_grid, big):
    csv = pd.read_csv(cli_grid / "report" / "allpairs_intervals.csv")
    lo = int(csv["lo_bin"].iloc[0])
    brute = Brute(big, 10)
    want = allpairs_rates.tail_bootstrap(brute.tail(lo), brute.id_group, brute.images, brute.names,
                                   global_target_fmr=TARGET, n_resamples=200, seed=SEED, confidence=0.95,
                                   summarize=fairness.summaries)
    got, want = keyed(csv), keyed(want)
    assert list(got.index) == list(want.index) and len(got) == 1 + 2 * 4 + 6 + len(fairness.METRICS)
    for col in ("estimate", "ci_low", "ci_high", "cp_low", "cp_high"):
        np.testing.assert_allclose(got[col], want[col], rtol=1e-12, atol=0)
    for col in ("k", "n", "n_resamples", "n_defined"):
        assert got[col].tolist() == want[col].tolist()
    assert (got["n_defined"] == 200).all() and (got["ci_low"] <= got["ci_high"]).all()
    assert (got.loc["group_fnmr", "ci_low"] < got.loc["group_fnmr", "ci_high"]).all()   # intervals do vary
    # the exact numbers beside them: counts of every pair at the exact (2^-14) global threshold
    exact = pd.read_csv(cli_grid / "report" / "allpairs_operating_points.csv")
    glob = exact[exact["threshold_kind"] == "global"].set_index("group")
    for g in brute.names:
        row = got.loc[("group_fmr", g, "", "")]
        assert (row.exact_k, row.exact_n) == (glob.loc[g, "false_matches"], glob.loc[g, "n_impostor"])
    assert got.loc[("threshold", "all", "", ""), "exact"] == glob.loc["all", "threshold"]


def test_the_report_reads_the_replicates_never_the_tails(cli_grid):
    """load_results reads no table; the whole report reads the bootstrap's replicates and the counts by column,
    never the tails (the rows that grow with the data)."""
    from grid.report import write_report

    res = load_results(cli_grid)
    assert res.tables.loaded == []
    write_report(res, cli_grid.parent / "again")
    assert "allpairs_replicates" in res.tables.loaded
    assert not {"allpairs_tail", "allpairs_identities", "allpairs_counts"} & set(res.tables.loaded)
    assert (cli_grid.parent / "again" / "allpairs_intervals.csv").read_text() == \
        (cli_grid / "report" / "allpairs_intervals.csv").read_text()


def test_report_through_the_cli_shows_the_section(cli_grid):
    md = (cli_grid / "report" / "report.md").read_text()
    assert "All pairs: identity-bootstrap 95% intervals at the global threshold" in md
    assert "over 200 resamples" in md and "in bins of 2^-10" in md
    section = md[md.index("Exact counts over every pair of the table"):]
    assert section.index("All pairs: cross-group impostor FMR") < section.index("identity-bootstrap 95% intervals")
    assert "All pairs: identity-bootstrap 95% intervals" in (cli_grid / "report" / "report.html").read_text()


@pytest.fixture(scope="module")
def covering_grid(tmp_path_factory):
    """60 identities x 3 images in 4 groups, run in-process, with a tail that covers every comparison (FMR factor
    1000 x 1e-2 >= 1) in bins of 2^-8, 300 resamples."""
    tmp = tmp_path_factory.mktemp("cover")
    table = exact_table(15, seed=7)
    write_table(table, tmp / "t.parquet")
    (tmp / "grid.toml").write_text(CONFIG.format(data=tmp / "t.parquet", seed=SEED, target=TARGET, resamples=300,
                                                 extra="tail_fmr_factor = 1000\ntail_bits = 8", report="false"))
    cfg = resolve_config(tmp / "grid.toml", {"run.out": str(tmp / "r")})
    summary = run_grid(cfg, progress=False)
    assert summary.exit_code == 0 and summary.failed == []
    return table, load_results(tmp / "r")


def test_covering_tail_agrees_with_direct_resampling_of_every_comparison(covering_grid):
    table, res = covering_grid
    got = keyed(stats.allpairs_intervals(res))
    assert (got["lo_bin"] == 0).all() and (got["bits"] == 8).all()
    brute = Brute(table, 8)
    R = 300
    point = brute.resample(np.ones(len(brute.id_group), np.int64), TARGET)
    direct = [brute.resample(m, TARGET) for m in bootstrap.identity_multiplicities(brute.id_group, R, SEED)]
    assert set(got.index) == set(point)
    for key, row in got.iterrows():
        values = np.array([d[key] for d in direct])
        ok = values[~np.isnan(values)]
        assert row.n_defined == len(ok) and (len(ok) == R or key[0] == "summary")   # a ratio over a zero rate
        assert row.estimate == pytest.approx(point[key], abs=1e-12)
        assert (row.ci_low, row.ci_high) == pytest.approx(tuple(np.quantile(ok, [0.025, 0.975])), abs=1e-12)


# ------------------------------------------------------------------------------------ config and the plan ---
@pytest.mark.parametrize("key,value,message", [
    ("tail_fmr_factor", "0.5", "'verification.tail_fmr_factor' must be at least 1"),
    ("tail_fmr_factor", "nan", "'verification.tail_fmr_factor' must be a finite number"),   # issue 21: nan and
    ("tail_fmr_factor", "inf", "'verification.tail_fmr_factor' must be a finite number"),   # inf alike, as types
    ("tail_fmr_factor", "'ten'", "'verification.tail_fmr_factor' must be a number"),
    ("tail_bits", "15", "'verification.tail_bits' must be from 4 to 14"),
    ("tail_bits", "3", "'verification.tail_bits' must be from 4 to 14"),
    ("tail_bits", "10.5", "'verification.tail_bits' must be an integer"),
    ("tail_bootstrap_jobs", "0", "'verification.tail_bootstrap_jobs' must be from 1 to run.max_jobs"),
])
def test_tail_options_are_checked(tmp_path: Path, key, value, message):
    (tmp_path / "g.toml").write_text(f"[verification]\n{key} = {value}\n")
    with pytest.raises(InputError, match=message):
        resolve_config(tmp_path / "g.toml")


def test_plan_carries_the_tail_rule_only_with_a_bootstrap():
    from grid.plan import make_plan

    over = {"verification.identities": "all", "verification.allpairs_shards": 2}
    jobs = [j for j in make_plan(resolve_config(None, {**over, "verification.tail_bits": 9,
                                                       "verification.tail_fmr_factor": 20}), "f0")
            if j.kind == "allpairs"]
    assert [j.params["tail"] for j in jobs] == [{"bits": 9, "fmr_factor": 20.0, "target_fmr": 1e-3}] * 2
    assert len({j.seed for j in jobs}) == 1
    none = [j for j in make_plan(resolve_config(None, {**over, "verification.bootstrap": 0}), "f0")
            if j.kind == "allpairs"]
    assert len(none) == 2 and all("tail" not in j.params for j in none)


# ----------------------------------------------------------------------- the bootstrap as jobs, batched ---
@pytest.mark.parametrize("chunk,block_bytes,scale", [(1 << 18, 128 << 20, 1), (7, 4000, 1), (50, 1 << 20, 4000)])
def test_batched_tail_statistics_equal_one_resample_at_a_time(chunk, block_bytes, scale):
    """TailStatistics.replicates (chunks of identity pairs, blocks of resamples, float32 partial sums, float64
    where they could pass 2^24: ``scale`` makes the weights that large) gives evaluate's values row by row,
    NaNs in the same places (a tail that does not cover every resample)."""
    brute = Brute(exact_table(40, seed=3), 10)
    mult = bootstrap.identity_multiplicities(brute.id_group, 40, 5) * scale
    median = sorted(brute.resample(m, TARGET)[("threshold", "all", "", "")] for m in mult[:20])[10]
    st = allpairs_rates.TailStatistics(brute.tail(int(round((median + 1) * 2 ** 10))), brute.id_group,
                                       brute.images, brute.names, TARGET, fairness.summaries, block_bytes)
    st.CHUNK_RECORDS = chunk
    keys, reps = st.replicates(mult)
    one = np.vstack([st.evaluate(m)[1] for m in mult])
    assert keys == st.evaluate(None)[0] and reps.shape == one.shape
    assert np.isnan(reps).any() and not np.isnan(reps).all()
    np.testing.assert_array_equal(reps, one)
    assert len(st._chunks[0]) > (1 if chunk < 1000 else 0)


def test_multiplicities_of_a_block_are_those_rows_of_the_whole():
    group = np.repeat([0, 1, 2], [7, 1, 12])
    whole = bootstrap.identity_multiplicities(group, 50, 3)
    for rows in (range(0, 50), range(10, 27), range(49, 50), range(5, 5)):
        assert np.array_equal(bootstrap.identity_multiplicities(group, 50, 3, rows), whole[rows.start:rows.stop])
    with pytest.raises(InputError, match="contiguous range within 0..50"):
        bootstrap.identity_multiplicities(group, 50, 3, range(40, 60))


def _grid(tmp: Path, table_path: Path, out: str, extra: str, workers: int, resamples: int = 150):
    (tmp / f"{out}.toml").write_text(CONFIG.format(data=table_path, seed=SEED, target=TARGET, resamples=resamples,
                                                   extra=extra, report="false").replace("workers = 2",
                                                                                        f"workers = {workers}"))
    return resolve_config(tmp / f"{out}.toml", {"run.out": str(tmp / out)})


def test_intervals_do_not_depend_on_the_number_of_jobs_or_workers(tmp_path):
    """1 bootstrap job on 1 worker and 3 jobs on 3 workers store the same replicates; the report's intervals equal
    tail_bootstrap in this process on the stored tails with the same seed, to 1e-12; the jobs ran after the
    allpairs jobs."""
    table = exact_table(20, seed=11)
    write_table(table, tmp_path / "t.parquet")
    got = []
    for out, jobs, workers in (("one", 1, 1), ("three", 3, 3)):
        cfg = _grid(tmp_path, tmp_path / "t.parquet", out, f"tail_bootstrap_jobs = {jobs}", workers)
        summary = run_grid(cfg, progress=False)
        assert summary.exit_code == 0 and summary.ran == 3 + jobs + 1 + 1 + 4 * 1   # + scores, impostor, cells
        res = load_results(tmp_path / out)
        ledger = res.ledger.values()
        assert sum(r["kind"] == "allpairs_bootstrap" for r in ledger) == jobs
        end = max(r["started"] + r["seconds"] for r in ledger if r["kind"] == "allpairs")
        assert min(r["started"] for r in ledger if r["kind"] == "allpairs_bootstrap") >= end - 0.01
        got.append(keyed(stats.allpairs_intervals(res)))
    tail = pd.read_parquet(tmp_path / "one" / "allpairs_tail")
    identities = pd.read_parquet(tmp_path / "one" / "allpairs_identities")
    t, group, images, names, _ = allpairs_rates.tail_from_rows(tail, identities)
    want = keyed(allpairs_rates.tail_bootstrap(t, group, images, names, global_target_fmr=TARGET, n_resamples=150,
                                               seed=SEED, summarize=fairness.summaries))
    for frame in got:
        assert list(frame.index) == list(want.index)
        for col in ("estimate", "ci_low", "ci_high", "cp_low", "cp_high"):
            np.testing.assert_allclose(frame[col], want[col], rtol=1e-12, atol=1e-15)
        assert frame["n_defined"].tolist() == want["n_defined"].tolist()
        assert frame["note"].tolist() == want["note"].tolist()
    assert (got[0]["ci_low"] < got[0]["ci_high"]).any()


def test_bootstrap_jobs_wait_for_every_allpairs_job_and_run_once_they_are_done(tmp_path):
    """allpairs jobs that fail (timed out): the bootstrap jobs do not run (missing, the report says so); the
    next run with --rerun-failed completes both stages."""
    write_table(exact_table(12, seed=4), tmp_path / "t.parquet")
    cfg = _grid(tmp_path, tmp_path / "t.parquet", "r", "tail_bootstrap_jobs = 2", 2, resamples=40)
    cfg["run"]["job_timeout"] = {**cfg["run"]["job_timeout"], "allpairs": 0.0001}
    first = run_grid(cfg, progress=False)
    assert first.exit_code == 1 and sum("allpairs shard" in f for f in first.failed) == 3
    res = load_results(tmp_path / "r")
    states = {r["kind"]: r["status"] for r in res.ledger.values()}
    assert "allpairs_bootstrap" not in states and states["allpairs"] == "failed"
    assert stats.allpairs_intervals(res).empty
    cfg["run"]["job_timeout"]["allpairs"] = 600.0
    second = run_grid(cfg, rerun_failed=True, progress=False)
    assert second.exit_code == 0 and second.ran == 3 + 2
    assert len(stats.allpairs_intervals(load_results(tmp_path / "r"))) == 1 + 2 * 4 + 6 + len(fairness.METRICS)
