"""The study in parts end to end on a tiny CPU configuration: the plan, each part in a process where Ray
cannot be imported, its pieces, their import (refused when corrupt or missing, skipped when repeated),
the ε parts planned from the imported fixed-β runs, and the study's analysis; plus the planner's
arithmetic, the pieces' checks and DCI on float16 codes."""

from __future__ import annotations

import io
import json
import math
import shutil
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from ray_testing import ROOT
from study_testing import TINY_STUDY_RUNS

from constrained_vae.cli import study
from constrained_vae.cli.study_analysis import analysis_main
from constrained_vae.errors import SweepError
from constrained_vae.evaluation.metrics import dci_from_codes
from constrained_vae.evaluation.scoring import evaluate_run
from constrained_vae.run import folder, locks
from constrained_vae.sweeps import parts, pieces
from constrained_vae.sweeps.study import STUDY_FILE, SWEEP_DIR

PIECE_MIB = 4  # a tiny run's weights are ~3 MiB: the 4 runs of a part make 3 pieces
# 2 β × 2 seeds, then their 2 matched ε × 2 seeds: dSprites runs of 4 steps, scored on MIG and DCI at tiny sizes.
TINY = [
    *TINY_STUDY_RUNS,
    "--eval-metrics",
    "mig,dci",
    "--eval-num-train",
    "40",
    "--eval-num-eval",
    "20",
    "--eval-device",
    "cpu",
    "--eval-dci-predictor",
    "forest",
    "--dual-lr",
    "0.01",
    "--piece-mib",
    str(PIECE_MIB),
    "--max-part-mib",
    "24",
]


def record(study_dir):
    return json.loads((study_dir / STUDY_FILE).read_text())


def run_part(command, out, work):
    """A planned part's command in a process of its own where ``import ray`` fails (as on the GPU machine)."""
    argv = [str(out) if word == parts.OUT_PLACEHOLDER else word for word in command] + ["--work", str(work)]
    code = "import sys; sys.modules['ray'] = None; import runpy; sys.argv = sys.argv[1:]; "
    code += "runpy.run_path(sys.argv[0], run_name='__main__')"
    argv[0] = str(ROOT / argv[0])
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=600)


def contents(study_dir):
    """Every file of the folder but the lock files, with its bytes."""
    return {
        p.relative_to(study_dir): p.read_bytes()
        for p in sorted(study_dir.rglob("*"))
        if p.is_file() and not locks.is_bookkeeping(p)
    }


@pytest.fixture(scope="module")
def parted_study(tmp_path_factory):
    """A study planned in parts, its fixed-β part run and imported, then its ε part run and imported; the
    folder as it stood before the ε part's import is kept (``before``)."""
    root = tmp_path_factory.mktemp("parts")
    out = root / "study"
    logs = {"plan": study.study_main(["plan", "--out", str(out), *TINY])}
    logs["record0"] = record(out)
    first = logs["record0"]["parts"]["planned"][0]
    logs["part1"] = run_part(first["command"], root / "out1", root / "work")
    logs["import1"] = study.study_main(["import", "--out", str(out), str(root / "out1")])
    logs["record1"] = record(out)
    second = logs["record1"]["parts"]["planned"][1]
    logs["part2"] = run_part(second["command"], root / "out2", root / "work")
    shutil.copytree(out, root / "before")
    logs["import2"] = study.study_main(["import", "--out", str(out), str(root / "out2")])
    return root, out, logs


def test_the_plan_gives_the_fixed_beta_runs_one_part_and_its_command(parted_study):
    _, _, logs = parted_study
    assert logs["plan"] == 0
    planned = logs["record0"]["parts"]
    assert planned["steps"] == 4 and not planned["shortened"] and logs["record0"]["matched_epsilon"] is None
    (part,) = planned["planned"]
    assert part["runs"] == ["beta1-seed0", "beta1-seed1", "beta4-seed0", "beta4-seed1"]
    command = part["command"]
    assert command[:5] == ["experiments/study.py", "part", "part-1", "--out", parts.OUT_PLACEHOLDER]
    assert "--dual-lr" not in command and command[command.index("--executor") + 1] == "local"


def test_a_part_trains_without_ray_and_comes_back_in_pieces_within_the_size_limit(parted_study):
    root, _, logs = parted_study
    assert logs["part1"].returncode == 0, logs["part1"].stderr
    manifest = pieces.read_manifest(root / "out1" / "part-1.manifest.json")
    sizes = [(root / "out1" / piece["file"]).stat().st_size for piece in manifest["pieces"]]
    assert len(sizes) > 1 and max(sizes) <= PIECE_MIB * parts.MIB and sum(sizes) == manifest["bytes"]
    assert sorted(p.name for p in (root / "out1").iterdir()) == sorted(
        ["part-1.manifest.json", *(piece["file"] for piece in manifest["pieces"])]
    )


def test_imported_runs_are_run_folders_scored_as_the_evaluation_scores_their_weights(parted_study):
    _, out, logs = parted_study
    assert logs["import1"] == 0 and logs["import2"] == 0
    run_dir = out / SWEEP_DIR / "beta4-seed1"
    scores = folder.read_scores(run_dir)
    protocols = logs["record0"]["parts"]["evaluation"]["protocols"]
    assert scores["step"] == 4 and scores["protocols"] == protocols
    again = evaluate_run(run_dir, protocols=protocols)  # on the imported weights, here
    assert scores["scores"]["dci"] == again["scores"]["dci"]  # from the codes saved there: the same numbers
    assert scores["scores"]["mig"] == again["scores"]["mig"]
    assert folder.read_summary(run_dir)["steps"] == 4 and [row["step"] for row in folder.read_metrics(run_dir)] == [
        2,
        4,
    ]


def test_the_epsilon_parts_are_planned_from_the_kls_the_imported_fixed_runs_reached(parted_study):
    _, out, logs = parted_study
    matched = logs["record1"]["matched_epsilon"]
    for beta in ("1", "4"):
        kls = [folder.read_summary(out / SWEEP_DIR / f"beta{beta}-seed{s}")["kl"] for s in (0, 1)]
        assert matched[beta] == float(f"{sum(kls) / 2:.3g}")
    second = logs["record1"]["parts"]["planned"][1]
    assert second["phase"] == "constrained" and second["values"] == sorted(set(matched.values()))
    assert "--dual-lr" in second["command"] and logs["part2"].returncode == 0, logs["part2"].stderr
    assert all(part["imported"] is not None for part in record(out)["parts"]["planned"])


def test_re_importing_an_imported_part_is_skipped_and_changes_nothing(parted_study, capsys):
    root, out, _ = parted_study
    before = contents(out)
    assert study.study_main(["import", "--out", str(out), str(root / "out1")]) == 0
    assert "part-1: already imported" in capsys.readouterr().out
    assert contents(out) == before


@pytest.mark.parametrize("damage", ["corrupt", "missing", "manifest"])
def test_a_damaged_part_is_refused_in_one_line_and_the_study_folder_is_unchanged(
    parted_study, tmp_path, capsys, damage
):
    root, _, _ = parted_study
    study_dir, returned = tmp_path / "study", tmp_path / "out2"
    shutil.copytree(root / "before", study_dir)
    shutil.copytree(root / "out2", returned)
    before = contents(study_dir)
    if damage == "corrupt":
        piece = returned / "part-2.tar.01"
        data = bytearray(piece.read_bytes())
        data[len(data) // 2] ^= 0xFF
        piece.write_bytes(bytes(data))
    elif damage == "missing":
        (returned / "part-2.tar.02").unlink()
    else:
        (returned / "part-2.manifest.json").write_text("{not json")
    capsys.readouterr()
    assert study.study_main(["import", "--out", str(study_dir), str(returned)]) == 2
    err = capsys.readouterr().err.strip()
    expected = {"corrupt": "part-2.tar.01 is corrupt", "missing": "part-2.tar.02 missing", "manifest": "not a manifest"}
    assert err.startswith("error: ") and expected[damage] in err and "\n" not in err, err
    assert contents(study_dir) == before
    assert sorted(p.name for p in study_dir.iterdir() if not locks.is_bookkeeping(p)) == [STUDY_FILE, SWEEP_DIR]


def test_a_part_that_did_not_come_back_is_listed_as_still_to_run_with_its_command(parted_study, tmp_path, capsys):
    root, _, _ = parted_study
    capsys.readouterr()
    assert study.study_main(["import", "--out", str(root / "before"), str(tmp_path)]) == 2
    assert "no part came back there" in capsys.readouterr().err
    assert study.study_main(["status", "--out", str(root / "before")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith(": imported") and lines[1].startswith("part-2 (ε, 4 runs): to run: python ")
    assert '--out "$OUT"' in lines[1]


def test_the_analysis_of_a_study_imported_in_parts_writes_its_table(parted_study, capsys):
    _, out, _ = parted_study
    assert analysis_main([str(out), "--select-by", "dci.disentanglement"]) == 0
    assert "SHORTENED from locatello2019's published 300,000" in capsys.readouterr().out
    table = (out / "analysis" / "study_table.csv").read_text()
    assert "dci.disentanglement_mean" in table and "mig.mig_mean" in table
    assert (out / "analysis" / "traversals-constrained.png").stat().st_size > 0  # drawn from the imported weights


def test_a_plan_in_a_planned_folder_prints_where_it_stands_and_another_is_refused(parted_study, capsys):
    _, out, _ = parted_study
    capsys.readouterr()
    assert study.study_main(["plan", "--out", str(out), *TINY]) == 0
    assert capsys.readouterr().out.count(": imported") == 2
    assert study.study_main(["plan", "--out", str(out), *TINY, "--steps-per-second", "5"]) == 2
    assert "planned otherwise" in capsys.readouterr().err
    assert study.study_main(["--out", str(out), *TINY[:-4]]) == 2
    assert "trained in parts" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps-per-second", "0"], "--steps-per-second must be a positive number"),
        (["--startup-seconds", "700"], "leaves no time"),
        (["--max-parts", "1"], "--max-parts must be at least 2"),
        (["--piece-mib", "1"], "makes more than 7 pieces"),
        (["--bank-size", "3"], "--bank-size: the plan of parts sets these"),
        (["--beta", "2"], "--beta: the study sets these"),
        (["--kappa", "30"], "--kappa"),
        (["--max-parts", "2", "--max-part-mib", "4"], "cannot hold the study even at 1 step"),
    ],
)
def test_a_bad_plan_is_refused_in_one_line_before_the_folder_is_written(tmp_path, capsys, args, message):
    assert study.study_main(["plan", "--out", str(tmp_path / "s"), *TINY, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err, err
    assert not (tmp_path / "s").exists()


def test_the_plan_shortens_every_run_alike_when_the_parts_allowed_cannot_hold_the_requested_steps():
    budget = parts.PartBudget(steps_per_second=1000, startup_seconds=120, score_seconds=20, max_parts=8)
    phases = [(5, 3), (9, 3)]  # the published study: 5 β, then at most 5 matched + 4 extra ε, 3 seeds

    def run_bytes(steps):
        return 4 * parts.MIB

    steps = parts.fitting_steps(budget, 300_000, phases, run_bytes)
    assert steps == parts.shortened(steps) and steps < 300_000
    capacity = parts.runs_per_part(budget, steps, run_bytes(steps))
    assert sum(parts.count_parts(v, s, capacity) for v, s in phases) <= 8
    longer = steps + 10 ** (len(str(steps)) - parts.SCHEDULE_DIGITS)  # the next schedule the plan could take
    assert sum(parts.count_parts(v, s, parts.runs_per_part(budget, longer, run_bytes(longer))) for v, s in phases) > 8
    assert steps == 60_000 and 120 + capacity * (steps / 1000 + 20) <= 600
    unlimited = parts.PartBudget(steps_per_second=1000)
    assert parts.fitting_steps(unlimited, 300_000, phases, run_bytes) == 300_000


@pytest.mark.parametrize(("values", "seeds", "capacity"), [(5, 3, 15), (5, 3, 7), (9, 3, 4), (5, 3, 1), (2, 5, 3)])
def test_a_grid_is_split_into_the_fewest_parts_each_run_in_exactly_one(values, seeds, capacity):
    grid = parts.split_grid(list(range(values)), list(range(seeds)), capacity)
    runs = [(v, s) for group, seed_group in grid for v in group for s in seed_group]
    assert sorted(runs) == [(v, s) for v in range(values) for s in range(seeds)]
    assert max(len(group) * len(seed_group) for group, seed_group in grid) <= capacity
    assert len(grid) >= math.ceil(values * seeds / capacity)
    if capacity >= seeds:
        assert len(grid) == math.ceil(values / (capacity // seeds))  # whole seed sets, as few parts as that allows


def test_pieces_rejoin_to_the_folder_and_an_archive_with_a_path_outside_it_is_refused(tmp_path):
    source = tmp_path / "tree"
    (source / "a").mkdir(parents=True)
    (source / "a" / "x.bin").write_bytes(bytes(range(256)) * 40)
    (source / "part.json").write_text("{}")
    manifest = pieces.pack(source, tmp_path / "out", "thing", piece_bytes=2048)
    assert len(manifest["pieces"]) > 2 and all(piece["bytes"] <= 2048 for piece in manifest["pieces"])
    pieces.join(tmp_path / "out" / "thing.manifest.json", tmp_path / "joined.tar")
    names = pieces.extract(tmp_path / "joined.tar", tmp_path / "back", lambda name: True)
    assert sorted(names) == ["a/x.bin", "part.json"]
    assert (tmp_path / "back" / "a" / "x.bin").read_bytes() == (source / "a" / "x.bin").read_bytes()
    with pytest.raises(SweepError, match="holds what it should not"):
        pieces.extract(tmp_path / "joined.tar", tmp_path / "refused", lambda name: name == "part.json")
    assert not (tmp_path / "refused").exists()
    with tarfile.open(tmp_path / "evil.tar", "w") as tar:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(SweepError, match="holds what it should not"):
        pieces.extract(tmp_path / "evil.tar", tmp_path / "evil", lambda name: True)
    assert not (tmp_path / "escape.txt").exists()


def test_dci_on_float16_codes_is_within_a_hundredth_of_dci_on_float32_codes():
    """Codes rounded to float16 (11 significant bits) against the float32 posterior means, boosted trees,
    300 + 150 points: measured, disentanglement 0.8546 → 0.8615, completeness 0.8337 → 0.8339,
    informativeness 0.8667 → 0.8644 (one test point of 450 changes class)."""
    rng = np.random.default_rng(0)
    sizes = np.array([3, 6, 10])

    def sample(n):
        factors = np.stack([rng.integers(0, size, n) for size in sizes], axis=1)
        codes = np.concatenate([factors / sizes + 0.05 * rng.standard_normal((n, 3)), rng.standard_normal((n, 2))], 1)
        return codes.astype(np.float32), factors

    train, test = sample(300), sample(150)
    scores = {}
    for dtype in (np.float32, np.float16):
        scores[dtype] = dci_from_codes(
            train[0].astype(dtype).astype(np.float64),
            train[1],
            test[0].astype(dtype).astype(np.float64),
            test[1],
            factor_sizes=sizes,
            predictor="boosting",
            n_jobs=1,
        )
    for key in ("disentanglement", "completeness", "informativeness"):
        assert abs(scores[np.float16][key] - scores[np.float32][key]) <= 0.01, key


def test_a_study_trained_whole_is_not_planned_or_imported_in_parts(tmp_path, capsys):
    out = tmp_path / "study"
    out.mkdir()
    plan = {"betas": [1.0, 4.0], "extra_epsilons": [], "seeds": [0, 1]}
    (out / STUDY_FILE).write_text(json.dumps({"command": [], "plan": plan, "sweep_args": [], "matched_epsilon": None}))
    before = contents(out)
    assert study.study_main(["plan", "--out", str(out), *TINY]) == 2
    assert "holds a study trained whole" in capsys.readouterr().err
    for command in (["import", "--out", str(out), str(tmp_path)], ["status", "--out", str(out)]):
        assert study.study_main(command) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"error: {out} holds no study planned in parts (experiments/study.py plan --help)"
    assert contents(out) == before
