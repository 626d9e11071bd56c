"""One writer per folder: a held run or sweep folder refuses a second writer, which touches nothing."""

import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest
from ray_testing import local_ray

from constrained_vae.cli.run import run_main
from constrained_vae.cli.sweep import sweep_main
from constrained_vae.errors import FolderInUse, RunFolderError
from constrained_vae.run import locks

FAST = (
    "--dataset linear-gaussian --spectrum 4,2,1 --num-samples 256 --steps 20 --batch-size 32 --log-every "
    "5 --no-progress"
).split()


def files_of(folder):
    """Every file under ``folder`` but lock files (their holder writes them): path → (mtime in ns, contents)."""
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in folder.rglob("*")
        if p.is_file() and p.name != locks.LOCK_FILE
    }


def test_a_held_folder_refuses_a_second_holder_and_names_the_first(tmp_path):
    with locks.hold(tmp_path / "run"):
        with pytest.raises(FolderInUse, match=rf"run is in use by process {os.getpid()}\b"):
            with locks.hold(tmp_path / "run"):
                pass
    with locks.hold(tmp_path / "run"):  # released on exit
        pass


def test_a_folder_made_for_a_writer_that_wrote_nothing_is_removed_again(tmp_path):
    with pytest.raises(ValueError, match="refused"):
        with locks.hold(tmp_path / "new" / "deeper" / "run"):
            raise ValueError("refused")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "kept").mkdir()
    with locks.hold(tmp_path / "kept"):
        pass
    assert (tmp_path / "kept").is_dir()  # a folder that was there stays


def test_the_lock_goes_with_its_process_even_on_kill_9(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import sys, time
            from constrained_vae.run import locks
            with locks.hold({str(tmp_path / "run")!r}):
                print("held", flush=True)
                time.sleep(60)
        """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(FolderInUse, match=f"process {holder.pid}"):
        with locks.hold(tmp_path / "run"):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with locks.hold(tmp_path / "run"):
        pass


def test_temporary_files_of_a_killed_writer_are_cleared_by_the_next_holder(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".checkpoint.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    (run / "keep.tmp").write_text("not ours")
    with locks.hold(run):
        pass
    assert sorted(p.name for p in run.iterdir()) == [".lock", "keep.tmp"]


def test_a_folder_that_cannot_be_made_is_a_clear_error(tmp_path):
    (tmp_path / "afile").write_text("")
    with pytest.raises(RunFolderError, match="not a folder"):
        with locks.hold(tmp_path / "afile"):
            pass
    with pytest.raises(RunFolderError, match="cannot create the folder"):
        with locks.hold(tmp_path / "afile" / "sub"):
            pass


def test_run_py_refuses_a_run_folder_another_process_holds(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run_main(["--epsilon", "1", *FAST, "--out", "r"]) == 0
    capsys.readouterr()
    before = files_of(tmp_path / "r")
    with locks.hold(tmp_path / "r"):
        code = run_main(["--resume", "r", "--steps", "40", "--no-progress"])
        after = files_of(tmp_path / "r")
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == f"error: r is in use by process {os.getpid()}; wait for it to finish, or stop it"
    assert after == before


def test_sweep_py_refuses_a_sweep_folder_another_process_holds(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with locks.hold(tmp_path / "sweep"):
        code = sweep_main(["--out", "sweep", "--epsilon", "1", "2", *FAST, "--workers", "1"])
        assert sorted(p.name for p in (tmp_path / "sweep").iterdir()) == [".lock"]
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: sweep is in use by process") and "\n" not in err


def test_a_sweep_point_held_by_another_process_fails_alone(tmp_path, monkeypatch, capsys):
    """`run.py --resume` on a point while its sweep runs: the sweep records that point as failed, not merged."""
    monkeypatch.chdir(tmp_path)
    command = ["--out", "sweep", "--epsilon", "1", "2", *FAST, "--workers", "1"]
    with local_ray(num_cpus=os.cpu_count() or 1):  # both sweeps use this Ray instead of starting one each
        assert sweep_main(command) == 0
        for name in ("eps1-seed0", "eps2-seed0"):
            (tmp_path / "sweep" / name / "summary.json").unlink()  # both points need resuming
        before = files_of(tmp_path / "sweep" / "eps1-seed0")
        capsys.readouterr()
        with locks.hold(tmp_path / "sweep" / "eps1-seed0"):
            assert sweep_main(command) == 1
            assert files_of(tmp_path / "sweep" / "eps1-seed0") == before
    out = capsys.readouterr().out
    assert f"failed: eps1-seed0: FolderInUse: sweep/eps1-seed0 is in use by process {os.getpid()}" in out
    assert (tmp_path / "sweep" / "eps2-seed0" / "summary.json").exists()


def test_figures_of_a_run_another_process_holds_are_refused(tmp_path, monkeypatch, capsys):
    from constrained_vae.plots.run_figures import FIGURES_DIR, write_figures

    monkeypatch.chdir(tmp_path)
    assert run_main(["--epsilon", "1", *FAST, "--out", "r"]) == 0
    with locks.hold(tmp_path / "r"):
        with pytest.raises(FolderInUse, match=f"r is in use by process {os.getpid()}"):
            write_figures(tmp_path / "r")
    assert not (tmp_path / "r" / FIGURES_DIR).exists()
    assert [p.name for p in write_figures(tmp_path / "r")] == ["kl_per_dimension.png"]


def test_evaluating_a_run_another_process_holds_is_refused(tmp_path, monkeypatch, capsys):
    from constrained_vae.evaluation.scoring import evaluate_paths
    from constrained_vae.run.folder import SCORES_FILE

    monkeypatch.chdir(tmp_path)
    assert (
        run_main(
            [
                "--epsilon",
                "1",
                "--dataset",
                "dsprites",
                "--steps",
                "2",
                "--batch-size",
                "8",
                "--out",
                "r",
                "--no-progress",
            ]
        )
        == 0
    )
    with locks.hold(tmp_path / "r"):
        with pytest.raises(FolderInUse, match=f"r is in use by process {os.getpid()}"):
            evaluate_paths([tmp_path / "r"])
    assert not (tmp_path / "r" / SCORES_FILE).exists()


@pytest.mark.parametrize("left", ["empty", "a killed holder's id"])
def test_a_refused_process_names_the_holder_that_is_still_writing_its_id(tmp_path, left):
    """Between taking the lock and writing its id, the holder's lock file is empty or still names the process
    that held it before; the refused process waits for the live holder's id rather than name a dead one."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    path = tmp_path / locks.LOCK_FILE
    path.write_text("" if left == "empty" else done.stdout)
    fd = os.open(path, os.O_RDONLY)
    try:
        writer = threading.Timer(0.05, lambda: path.write_text(f"{os.getpid()}\n"))
        writer.start()
        assert locks._holder(fd) == f"process {os.getpid()}"
        writer.join()
    finally:
        os.close(fd)
