"""``biasgrid data synth`` and ``biasgrid data import`` through their argparse handlers."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from grid.cli import data as cli_data
from storage.errors import InputError
from storage.synth import SynthParams, generate
from storage.table import read_table

ROOT = Path(__file__).resolve().parents[1]


def run(argv: list[str]) -> int:
    """Parse ``argv`` the way grid/cli.py does and call the handler."""
    parser = argparse.ArgumentParser(prog="biasgrid")
    sub = parser.add_subparsers(dest="command", required=True)
    cli_data.register(sub)
    args = parser.parse_args(argv)
    return args.func(args)


def test_synth_writes_the_generated_table(tmp_path, capsys):
    out = tmp_path / "synth.parquet"
    code = run(["data", "synth", "--out", str(out), "--identities-per-group", "10", "--dim", "32", "--seed", "4",
                "--gender-separation", "asian=4,black=7", "--image-noise", "1,0.8,0.9", "--gender-alignment", "0.5"])
    assert code == 0
    expected = generate(SynthParams(identities_per_group=10, dim=32, seed=4, gender_separation=(4.0, 5.5, 7.0),
                                    image_noise=(1.0, 0.8, 0.9), gender_alignment=0.5))
    assert read_table(out).fingerprint() == expected.fingerprint()
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"wrote {out}: synthetic data (seed 4), {len(expected)} rows, dim 32, 60 identities")
    assert "asian_male 10" in line and "black_female 10" in line


@pytest.mark.parametrize("argv,pattern", [
    (["--dim", "big"], "--dim big: expected an integer"),
    (["--gender-alignment", "2"], "'gender_alignment' must be a number from 0 to 1"),
    (["--image-noise", "1,2"], "--image-noise 1,2: 2 values"),
    (["--gender-offset", "martian=1"], "'martian' is not an ethnicity"),
])
def test_synth_bad_options_write_nothing(tmp_path, argv, pattern):
    out = tmp_path / "synth.parquet"
    with pytest.raises(InputError, match=pattern):
        run(["data", "synth", "--out", str(out), "--identities-per-group", "5", "--dim", "8", *argv])
    assert list(tmp_path.iterdir()) == []


def test_out_must_be_a_parquet_file(tmp_path):
    with pytest.raises(InputError, match="expected a .parquet file name"):
        run(["data", "synth", "--out", str(tmp_path / "x.csv")])
    folder = tmp_path / "dir.parquet"
    folder.mkdir()
    with pytest.raises(InputError, match="is a folder"):
        run(["data", "synth", "--out", str(folder)])


def make_diveface(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for group in ("HA4K_120", "MB4K_120"):
        for i in range(3):
            ident = root / group / f"{group}_person{i}"
            ident.mkdir(parents=True)
            for k in range(3):
                np.save(ident / f"{k}_0.npy", rng.random(5, dtype=np.float32))
    return root


def test_import_diveface_folder(tmp_path, capsys):
    src = make_diveface(tmp_path / "4K_120")
    out = tmp_path / "out" / "t.parquet"
    assert run(["data", "import", str(src), "--out", str(out)]) == 0
    table = read_table(out)
    assert len(table) == 18 and table.dim == 5
    line = capsys.readouterr().out
    assert "(diveface), 18 rows, dim 5, 6 identities (asian_male 3, caucasian_female 3)" in line


def test_import_table_with_map_and_prefix_group(tmp_path):
    src = tmp_path / "t.csv"
    src.write_text("who,image,ethnicity,gender,v0,v1\n"
                   "7,a,asian,male,0.1,0.2\n7,b,asian,male,0.3,0.4\n7,c,black,female,0.5,0.6\n")
    out = tmp_path / "t.parquet"
    with pytest.raises(InputError, match="identity '7' is labelled"):
        run(["data", "import", str(src), "--out", str(out), "--format", "table", "--map", "identity=who,embedding=v"])
    assert not out.exists()
    assert run(["data", "import", str(src), "--out", str(out), "--format", "table", "--map", "identity=who",
                "--map", "embedding=v", "--prefix-group"]) == 0
    table = read_table(out)
    assert list(table.identity) == ["asian_male/7", "asian_male/7", "black_female/7"]
    assert np.allclose(table.embeddings[2], [0.5, 0.6])


def test_import_bad_input_writes_nothing(tmp_path):
    src = make_diveface(tmp_path / "root")
    (src / "XX4K_120").mkdir()
    out = tmp_path / "t.parquet"
    with pytest.raises(InputError, match="'XX4K_120' is not a known group"):
        run(["data", "import", str(src), "--out", str(out)])
    with pytest.raises(InputError, match="--map identity: expected COLUMN=SOURCE"):
        run(["data", "import", str(src), "--out", str(out), "--map", "identity"])
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["root"]


def test_biasgrid_command_line(tmp_path):
    out = tmp_path / "s.parquet"
    done = subprocess.run([sys.executable, "-m", "grid.cli", "data", "synth", "--out", str(out),
                           "--identities-per-group", "5", "--dim", "8"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout and len(read_table(out)) > 0
    bad = subprocess.run([sys.executable, "-m", "grid.cli", "data", "import", str(tmp_path / "missing"),
                          "--out", str(tmp_path / "x.parquet")], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "missing: no such file or folder" in bad.stderr
    assert not (tmp_path / "x.parquet").exists()
