"""`autonl train` and `autonl eval` as a user runs them: outputs, exact resume, bad input."""
import json

import pytest
import torch
from PIL import Image

from conftest import autonl_exe
from helpers import assert_one_line_error, recomputed_val_accuracy, start_and_sigkill

SMALL = ["--resolution", "32", "--width", "0.35", "--batch-size", "32", "--train-size", "128",
         "--val-size", "64", "--workers", "0"]


def test_train_writes_a_run_and_eval_reproduces_it(cli, tmp_path):
    run = tmp_path / "run"
    proc = cli("train", "mobilenetv2", "--data", "digits", "--steps", "8", "--eval-every", "4",
               "--checkpoint-every", "4", "--out", run, *SMALL, check_ok=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["step"] == 8 and result["val_n"] == 64
    # the reported accuracy is that of the saved model's predictions on the 64 validation images
    assert result["val_acc"] == pytest.approx(recomputed_val_accuracy(run / "model", "digits", 64)[0])
    names = sorted(p.name for p in run.iterdir())
    assert names == ["checkpoint.pt", "config.json", "curves.png", "graph.ir", "graph.json", "manifest.json",
                     "metrics.jsonl", "model", "result.json"]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["kind"] == "train" and manifest["seeds"]["seed"] == 0 and "model/weights.pt" in manifest["files"]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [8]  # log every 10 steps, and the last
    assert [r["step"] for r in rows if "val_acc" in r] == [4, 8]
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = json.loads(cli("eval", run, "--data", "digits", "--val-size", "64", "--workers", "0",
                           check_ok=True).stdout)
    assert again["val_acc"] == pytest.approx(result["val_acc"])


def _state(run):
    return torch.load(run / "model" / "weights.pt", weights_only=True)


def test_resume_after_sigkill_matches_an_uninterrupted_run(cli, tmp_path):
    # one thread in all three (the default follows the free cores, and float sums follow the
    # thread count: on a busy machine the runs would differ in the last bits)
    args = ["mobilenetv2", "--data", "digits", "--steps", "24", "--checkpoint-every", "4",
            "--eval-every", "100", *SMALL, "--threads", "1"]
    cli("train", *args, "--out", tmp_path / "straight", check_ok=True)

    killed = tmp_path / "killed"
    start_and_sigkill([autonl_exe(), "train", *args, "--out", str(killed)], killed)
    step = torch.load(killed / "checkpoint.pt", weights_only=True)["step"]
    assert 0 < step < 24
    # what the run computes stays the run's: another --lr or --steps is one line, before any work
    assert_one_line_error(cli("train", "mobilenetv2", "--out", killed, "--resume", "--lr", "0.5"),
                          "--lr 0.5: a resumed run keeps its own settings (lr = 0.1")
    assert_one_line_error(cli("train", "mobilenetv2", "--out", killed, "--resume", "--steps", "30"),
                          "--steps 30: a resumed run keeps its own settings (steps = 24")
    cli("train", "mobilenetv2", "--out", killed, "--resume", "--workers", "1", "--threads", "1", check_ok=True)
    a, b = _state(tmp_path / "straight"), _state(killed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    def logged(run):
        return [(json.loads(line)["step"], "loss" in line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert logged(killed) == logged(tmp_path / "straight")  # no row lost or written twice


def make_folder(root, classes=("cat", "dog"), n=3):
    for split in ("train", "val"):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (20, 20), (i * 40, 10, 200)).save(d / f"{i}.jpg")
    return root


def test_bad_data_is_one_line_and_leaves_no_run(cli, tmp_path):
    run = tmp_path / "run"
    assert_one_line_error(cli("train", "mobilenetv2", "--data", tmp_path / "nope", "--out", run),
                          "dataset folder", "does not exist")
    assert_one_line_error(cli("train", "mobilenetv2", "--data", "digitz", "--out", run),
                          "unknown dataset 'digitz'", "did you mean 'digits'")
    empty = make_folder(tmp_path / "empty")
    for f in (empty / "val" / "dog").iterdir():
        f.unlink()
    assert_one_line_error(cli("train", "mobilenetv2", "--data", empty, "--out", run), "dog", "empty")
    corrupt = make_folder(tmp_path / "corrupt")
    bad = corrupt / "train" / "cat" / "1.jpg"
    bad.write_bytes(bad.read_bytes()[:60])
    assert_one_line_error(cli("train", "mobilenetv2", "--data", corrupt, "--out", run, "--workers", "0"),
                          str(bad), "--skip-corrupt")
    assert not run.exists()
    ok = cli("train", "mobilenetv2", "--data", corrupt, "--out", run, "--skip-corrupt", "--steps", "2",
             "--batch-size", "2", "--workers", "0", "-r", "32", "-w", "0.35")
    assert ok.returncode == 0, ok.stderr
    assert "corrupt" in ok.stderr.lower()


def test_bad_checkpoints(cli, tmp_path):
    run = tmp_path / "run"
    cli("train", "mobilenetv2", "--data", "digits", "--steps", "2", "--out", run, *SMALL, check_ok=True)
    assert_one_line_error(cli("train", "mobilenetv2", "--data", "digits", "--out", run, *SMALL),
                          "exists and holds checkpoint.pt", "--force", "--resume")
    ckpt = run / "checkpoint.pt"
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 3])
    assert_one_line_error(cli("train", "x", "--out", run, "--resume"), "checkpoint.pt", "not a readable checkpoint")
    torch.save({"model": {}}, ckpt)
    assert_one_line_error(cli("train", "x", "--out", run, "--resume"), "not an autonl checkpoint")
    weights = run / "model" / "weights.pt"
    torch.save({"stem.weight": torch.zeros(3)}, weights)
    assert_one_line_error(cli("eval", run, "--data", "digits"), "weights do not fit graph")
    assert_one_line_error(cli("train", "x", "--out", tmp_path / "none", "--resume"), "nothing to resume")


def test_graph_file_must_fit_the_data(cli, tmp_path):
    graph = tmp_path / "g.json"
    graph.write_text(cli("show", "mobilenetv2", "-r", "32", "--format", "json", check_ok=True).stdout)
    assert_one_line_error(cli("train", graph, "--data", "digits", "--out", tmp_path / "run"),
                          "predicts 1000 classes but the data 'digits' has 10")
    assert not (tmp_path / "run").exists()


def test_the_loss_plot_turns_logarithmic_when_one_value_would_flatten_the_rest(tmp_path, monkeypatch):
    """A run whose loss reached 1e29 once drew every other value as a flat line at 0."""
    from matplotlib.figure import Figure

    from autonl.backends.torch.train import plot_curves

    scales = []
    real = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: (scales.append(fig.axes[0].get_yscale()),
                                                                  real(fig, *a, **k)))
    for name, losses in (("calm", [2.3, 1.9, 1.2, 0.8]), ("spike", [2.3, 1.9, 9.66e28, 0.8])):
        metrics = tmp_path / f"{name}.jsonl"
        metrics.write_text("".join(json.dumps({"step": i + 1, "loss": v, "train_acc": 0.5}) + "\n"
                                   for i, v in enumerate(losses)))
        plot_curves(metrics, tmp_path / f"{name}.png")
        assert (tmp_path / f"{name}.png").is_file()
    assert scales == ["linear", "log"]
