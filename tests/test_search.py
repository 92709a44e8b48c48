"""`autonl search` as a user runs it: outputs, exact resume, torchrun, bad input."""
import json
import os
import subprocess
import sys

import pytest

from autonl.ir import build_preset
from autonl.ir.decisions import check_decisions
from autonl.passes import analyze_cost
from autonl.passes.derive import Derive

from conftest import autonl_exe
from helpers import assert_one_line_error, landed, start_and_sigkill

TINY = ["--batch-size", "16", "--train-size", "128", "--val-size", "32", "--workers", "0", "--arch-lr", "0.2",
        "--checkpoint-every", "4"]


def test_search_writes_its_run(cli, tmp_path):
    run = tmp_path / "s"
    proc = cli("search", "--target-macs", "300M", "--cost-resolution", "224", "--steps", "12", "--warmup-steps", "6",
               "--optimizer", "rmsprop", "--lr", "0.01", "--out", run, *TINY, check_ok=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["target_macs"] == 300e6 and result["cost_resolution"] == 224
    config = json.loads((run / "search_config.json").read_text())
    assert (config["optimizer"], config["lr"]) == ("rmsprop", 0.01)     # the weights' optimizer, as train's
    for name in ("decisions.json", "search_graph.json", "search_graph.ir", "metrics.jsonl", "trace.jsonl",
                 "macs.png", "decisions.png", "checkpoint.pt", "result.json", "search_config.json"):
        assert (run / name).exists(), name
    space = build_preset("search-space", resolution=32, num_classes=10)
    decisions = json.loads((run / "decisions.json").read_text())
    check_decisions(space, decisions)
    derived = Derive(decisions)(build_preset("search-space", num_classes=10)).graph
    assert analyze_cost(derived).macs == result["derived_macs"]
    trace = [json.loads(line) for line in (run / "trace.jsonl").read_text().splitlines()]
    assert [t["step"] for t in trace] == [5, 10, 12]
    assert len(trace[0]["gates"]) == 22 * 3 + 21 * 2 + 15  # lightnl x3, mbconv k/e (not the first), skip
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["warmup"] and rows[0]["macs"] == pytest.approx(analyze_cost(build_preset("search-space", num_classes=10)).total("macs_max"))


def test_search_resume_after_sigkill_gives_the_same_decisions(cli, tmp_path):
    # one thread in both (the default follows the free cores, and float sums, so the
    # decisions, follow the thread count)
    args = ["--target-macs", "250M", "--cost-resolution", "224", "--steps", "24", "--warmup-steps", "6", *TINY,
            "--threads", "1"]
    cli("search", *args, "--out", tmp_path / "straight", check_ok=True)
    killed = tmp_path / "killed"
    start_and_sigkill([autonl_exe(), "search", *args, "--out", str(killed)], killed)
    cli("search", "--out", killed, "--resume", "--threads", "1", check_ok=True)
    assert (killed / "decisions.json").read_text() == (tmp_path / "straight" / "decisions.json").read_text()
    straight = (tmp_path / "straight" / "trace.jsonl").read_text()
    assert (killed / "trace.jsonl").read_text() == straight


def test_resume_keeps_the_runs_settings_and_says_so(cli, tmp_path):
    """Options that change what a resumed run computes are refused in one line naming the
    run's own value (they were silently ignored); runtime ones (workers, intervals) apply."""
    run = tmp_path / "r"
    cli("search", "--target-macs", "250M", "--cost-resolution", "224", "--steps", "4", "--warmup-steps", "2",
        "--out", run, *TINY, check_ok=True)
    for args, fragment in ((["--steps", "8"], "--steps 8: a resumed run keeps its own settings (steps = 4"),
                           (["--target-macs", "300M"], "--target-macs 300000000.0: a resumed run keeps its own "
                                                       "settings (target_macs = 250000000.0"),
                           (["--lambda", "1"], "--lambda 1.0: a resumed run keeps its own settings (lam = 5.0"),
                           (["-r", "64"], "--resolution: a resumed run keeps its own graph")):
        assert_one_line_error(cli("search", "--out", run, "--resume", *args), fragment, "another --out")
    # a run started before a setting existed gets its default when resumed: compared with that
    saved = json.loads((run / "search_config.json").read_text())
    del saved["landing"]
    (run / "search_config.json").write_text(json.dumps(saved))
    assert_one_line_error(cli("search", "--out", run, "--resume", "--landing", "measured"),
                          "--landing measured: a resumed run keeps its own settings (landing = margin")
    proc = cli("search", "--out", run, "--resume", "--steps", "4", "--workers", "1", "--checkpoint-every", "2",
               check_ok=True)
    assert json.loads(proc.stdout.strip().splitlines()[-1])["step"] == 4
    assert json.loads((run / "search_config.json").read_text())["workers"] == 1
    assert_one_line_error(cli("search", "--out", tmp_path / "new"), "Missing option '--target-macs'")


def test_ctrl_c_says_how_to_resume(tmp_path):
    import signal
    import time

    run = tmp_path / "r"
    p = subprocess.Popen([autonl_exe(), "search", "--target-macs", "250M", "--cost-resolution", "224", "--steps",
                          "300", "--out", str(run), *TINY, "--checkpoint-every", "2"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 120
        while not (run / "checkpoint.pt").exists() and time.time() < deadline and p.poll() is None:
            time.sleep(0.1)
        p.send_signal(signal.SIGINT)
        err = p.communicate(timeout=120)[1]
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 130 and "Traceback" not in err
    assert f"error: interrupted; continue from its last checkpoint with: autonl search --out {run} --resume" in err
    # Ctrl-C while the command is still importing torch and TVM: the same kind of line, not a
    # traceback from inside an import (cli/entry.py)
    p = subprocess.Popen([autonl_exe(), "search", "--target-macs", "250M", "--cost-resolution", "224", "--out",
                          str(tmp_path / "early"), *TINY], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(0.3)
    p.send_signal(signal.SIGINT)
    err = p.communicate(timeout=120)[1]
    assert p.returncode == 130 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("error: interrupted"), err


def test_torchrun_two_processes_agree(tmp_path):
    """`torchrun --nproc_per_node 2` (gloo on CPU): both ranks end with identical decisions."""
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "autonl.cli.main", "search", "--target-macs", "250M", "--cost-resolution", "224",
                           "--steps", "10", "--warmup-steps", "3", "--out", str(run), *TINY],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((run / f"decisions.rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1]
    assert landed(ranks[0], run) == json.loads((run / "decisions.json").read_text())


def test_nproc_option_starts_torchrun(cli, tmp_path):
    """From a folder holding a numpy.py (as a user's may): torchrun and its workers never
    import from the working folder (`python -m` put it first on their import path)."""
    run = tmp_path / "nproc"
    here = tmp_path / "here"
    here.mkdir()
    (here / "numpy.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'a').write('numpy.py ran\\n')\n"
                                   "raise SystemExit('the working folder was imported from')\n")
    proc = cli("search", "--target-macs", "250M", "--cost-resolution", "224", "--steps", "4", "--warmup-steps", "2",
               "--out", run, "--nproc", "2", *TINY, cwd=here, real=True)   # torchrun re-runs its command line
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (tmp_path / "ran").exists()
    assert landed(json.loads((run / "decisions.rank1.json").read_text()), run) == \
        json.loads((run / "decisions.json").read_text())


@pytest.mark.parametrize("args, fragments", [
    (["--target-macs", "50M", "--cost-resolution", "224"],
     ["target 50M MACs is below the smallest network of this search space (101M MACs; the largest has 549M)"]),
    (["--target-macs", "900M", "--cost-resolution", "224"],
     ["target 900M MACs is above the largest network of this search space (549M MACs; the smallest has 101M)"]),
    (["--target-macs", "lots"], ["'lots' is not a MAC count"]),
])
def test_bad_targets(cli, tmp_path, args, fragments):
    assert_one_line_error(cli("search", *args, "--out", tmp_path / "s", *TINY), *fragments)
    assert not (tmp_path / "s").exists()


def test_bad_space_and_data(cli, tmp_path):
    space = tmp_path / "space.toml"
    space.write_text('[[choice]]\nop = "mbconv"\nattr = "kernel"\noptions = [3, 5]\n')
    assert_one_line_error(cli("search", "mobilenetv2", "--space", space, "--target-macs", "5M", "--out", tmp_path / "s"),
                          "op 'mbconv' has no attribute 'kernel'")
    space.write_text('[[choice]]\nop = "conv3d"\nattr = "k"\noptions = [3, 5]\n')
    assert_one_line_error(cli("search", "mobilenetv2", "--space", space, "--target-macs", "5M", "--out", tmp_path / "s"),
                          "unknown op 'conv3d'")
    empty = tmp_path / "empty"
    for split in ("train", "val"):
        (empty / split / "a").mkdir(parents=True)
        (empty / split / "b").mkdir(parents=True)
    assert_one_line_error(cli("search", "--data", empty, "--target-macs", "5M", "--out", tmp_path / "s"), "empty")
    assert not (tmp_path / "s").exists()


def test_holdout_and_warmup_drop(cli, tmp_path):
    """--holdout: the search's supernet accuracy is measured on held-out training images and
    the validation split is never read (here it holds only files that are not images, which
    any read would refuse); --warmup-drop: each warm-up step runs a random sub-network."""
    from test_data import make_folder
    data = make_folder(tmp_path / "data", classes=("a", "b"), n_train=24, n_val=1, exts=(".png",))
    for image in (data / "val").rglob("*.png"):
        image.write_bytes(b"not an image")
    run = tmp_path / "s"
    proc = cli("search", "search-space", "-r", "32", "--target-macs", "5M", "--steps", "12", "--warmup-steps", "6",
               "--warmup-drop", "0.5", "--holdout", "16", "--data", data, "--out", run, "--batch-size", "8",
               "--workers", "0", "--checkpoint-every", "4")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["supernet_val_on"] == "16 held-out training images"
    assert json.loads((run / "search_config.json").read_text())["warmup_drop"] == 0.5
    trace = [json.loads(line) for line in (run / "trace.jsonl").read_text().splitlines()]
    warm = [t for t in trace if t["step"] < 6]
    on = [g[2] for t in warm for g in t["gates"].values()]
    assert 0 < sum(on) < len(on)        # a sampled sub-network: some gates on, some off
    # without --holdout the same search reads the validation split, and refuses its files
    assert_one_line_error(cli("search", "search-space", "-r", "32", "--target-macs", "5M", "--steps", "2",
                              "--warmup-steps", "1", "--data", data, "--out", tmp_path / "t", "--batch-size", "8",
                              "--workers", "0"), "val")
    too_many = cli("search", "search-space", "-r", "32", "--target-macs", "5M", "--steps", "2", "--warmup-steps", "1",
                   "--holdout", "48", "--data", data, "--out", tmp_path / "u", "--batch-size", "8", "--workers", "0")
    assert_one_line_error(too_many, "holding out 48 training images leaves none")
