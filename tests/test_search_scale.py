"""The search at scale: several machines through torchrun, resume on 2 processes after a
SIGKILL and on another number of processes, and JPEGs decoded at the size the crop needs."""
import json
import os
import shutil
import subprocess
import time

import numpy as np
import pytest
import torch
from PIL import Image

from autonl.backends.torch.data.image_folder import ImageFolderDataset, find_unreadable
from autonl.backends.torch.data.transforms import EvalTransform, TrainTransform

from conftest import autonl_exe, free_port, stop_process_tree
from helpers import assert_one_line_error, landed, start_and_sigkill

TINY = ["--batch-size", "16", "--train-size", "128", "--val-size", "32", "--workers", "0", "--arch-lr", "0.2",
        "--target-macs", "250M", "--cost-resolution", "224"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _search(out, *extra, steps=10):
    return [autonl_exe(), "search", "--steps", str(steps), "--warmup-steps", "3", "--out", str(out), *TINY, *extra]


def test_two_nodes_meet_at_the_master_and_only_node_0_writes(tmp_path):
    """Two `autonl search --nnodes 2` commands, one per 'machine' (here both on loopback):
    torchrun's rendezvous joins them, rank 0 writes every rank's decisions, node 1 writes nothing."""
    port = free_port()
    common = ["--nnodes", "2", "--master-addr", "127.0.0.1", "--master-port", str(port)]
    procs = [subprocess.Popen(_search(tmp_path / f"node{r}", *common, "--node-rank", str(r)), env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    try:
        outs = [p.communicate(timeout=600) for p in procs]
    finally:
        for p in procs:
            stop_process_tree(p)
    for p, (_out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    run = tmp_path / "node0"
    ranks = [json.loads((run / f"decisions.rank{r}.json").read_text()) for r in (0, 1)]
    # The rank files hold the thresholds' decisions; decisions.json the landed ones.
    assert ranks[0] == ranks[1]
    assert landed(ranks[0], run) == json.loads((run / "decisions.json").read_text())
    assert not (tmp_path / "node1").exists()


@pytest.mark.parametrize("args, fragment", [
    (["--nnodes", "2"], "--nnodes above 1 needs --master-addr"),
    (["--nnodes", "2", "--node-rank", "2", "--master-addr", "127.0.0.1"], "--node-rank 2 is not below --nnodes 2"),
    (["--nnodes", "0"], "--nnodes"),
])
def test_bad_launch_options_are_one_line(cli, tmp_path, args, fragment):
    proc = cli(*_search(tmp_path / "run", *args)[1:])
    assert_one_line_error(proc, fragment)
    assert not (tmp_path / "run").exists()


def test_two_process_resume_after_sigkill_gives_the_same_decisions(tmp_path):
    args = ["--nproc", "2", "--checkpoint-every", "4"]
    straight = subprocess.run(_search(tmp_path / "straight", *args, steps=12), env=ENV, capture_output=True,
                              text=True, timeout=600)
    assert straight.returncode == 0, straight.stderr[-3000:]
    killed = tmp_path / "killed"
    start_and_sigkill(_search(killed, *args, steps=12), killed, group=True, env=ENV)
    again = tmp_path / "one"                  # the same checkpoint, to resume on one process below
    shutil.copytree(killed, again)
    resumed = subprocess.run([autonl_exe(), "search", "--out", str(killed), "--resume", "--nproc", "2"], env=ENV,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (killed / "decisions.json").read_text() == (tmp_path / "straight" / "decisions.json").read_text()
    assert (killed / "trace.jsonl").read_text() == (tmp_path / "straight" / "trace.jsonl").read_text()

    # the 2-process checkpoint resumed on one process: it runs to the end and says what changes
    one = subprocess.run([autonl_exe(), "search", "--out", str(again), "--resume"], env=ENV,
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    assert "checkpointed by 2 process(es) on 1" in one.stderr
    assert json.loads((again / "result.json").read_text())["step"] == 12


def _jpeg_folder(root, n=12, size=(480, 360)):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        coarse = rng.uniform(0, 255, (size[1] // 24, size[0] // 24, 3)).astype(np.uint8)
        img = Image.fromarray(coarse).resize(size, Image.BICUBIC)
        path = root / f"{i}.jpg"
        img.save(path, quality=92)
        paths.append(str(path))
    return paths


def test_jpegs_are_decoded_at_the_size_the_crop_needs(tmp_path, monkeypatch):
    """The reduced decode gives what a full decode of the same (rounded) crop gives, to JPEG's
    precision, with the same random crops and flips; it decodes a smaller image where the crop
    allows, and only there."""
    from autonl.backends.torch.data import image_folder

    paths = _jpeg_folder(tmp_path)
    samples = [(p, i % 2) for i, p in enumerate(paths)]
    real, whole = image_folder._decode, {"on": False}
    decoded = []

    def decode(path, reduce=None):
        if whole["on"] and reduce is not None:      # let the dataset plan, then decode whole
            plan = reduce
            reduce = lambda w, h: (plan(w, h), None)[1]       # noqa: E731
        img = real(path, reduce)
        decoded.append(img.shape[-2:])
        return img

    monkeypatch.setattr(image_folder, "_decode", decode)
    for transform, small in ((TrainTransform(32, scale=(0.5, 1.0)), True), (EvalTransform(32), True),
                             (TrainTransform(224, scale=(0.9, 1.0)), False)):
        fast = ImageFolderDataset(samples, ["a", "b"], transform, reduced_decode=True)
        full = ImageFolderDataset(samples, ["a", "b"], transform, reduced_decode=False)
        for i in range(len(samples)):
            decoded.clear()
            whole["on"] = False
            a, la = fast[(i, 1000 + i)]
            whole["on"] = True              # the same plan and rounded crop, decoded at full size
            b, lb = fast[(i, 1000 + i)]
            assert la == lb and a.shape == b.shape == full[(i, 1000 + i)][0].shape
            # normalised units: libjpeg's DCT scaling against a full decode + antialiased resize
            assert (a - b).abs().mean() < 0.06, (i, float((a - b).abs().mean()))
            assert (decoded[0][0] < decoded[1][0]) == small, (transform, decoded)
        whole["on"] = False
        assert torch.equal(fast[(3, 7)][0], fast[(3, 7)][0])      # deterministic in the sample seed


def test_the_check_at_eighth_scale_finds_what_a_full_decode_finds(tmp_path):
    """The up-front check decodes JPEGs at 1/8 scale (every coefficient is still read): a file
    fails it exactly when a full decode fails."""
    from autonl.backends.torch.data.image_folder import _decode

    paths = _jpeg_folder(tmp_path, n=6)
    data = open(paths[1], "rb").read()
    open(paths[1], "wb").write(data[: len(data) // 2])                  # truncated
    for k, (start, stop) in enumerate(((600, 4000), (300, 301), (2000, 2600)), start=2):
        broken = bytearray(open(paths[k], "rb").read())                 # entropy-coded data damaged
        broken[start:stop] = b"\xff" * (stop - start)
        open(paths[k], "wb").write(bytes(broken))

    def full_decode_fails(p):
        try:
            _decode(p)
            return False
        except Exception:  # noqa: BLE001
            return True

    bad = find_unreadable(paths, "jpegs")
    assert paths[1] in bad and "truncated" in bad[paths[1]]
    assert {p for p in paths if full_decode_fails(p)} == set(bad)


def test_a_second_multi_process_writer_is_one_line_before_torchrun_starts(tmp_path, cli):
    """`autonl search --nproc 2` holds its folder's lock itself, before torchrun: a second
    writer gets one line (not torchrun's failure report), and the first run is untouched."""
    run = tmp_path / "run"
    first = subprocess.Popen(_search(run, "--nproc", "2", steps=400), env=ENV, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (run / "search_config.json").exists() and time.time() < deadline and first.poll() is None:
            time.sleep(0.1)
        assert first.poll() is None, "the first run ended early"
        second = cli(*_search(run, "--nproc", "2")[1:])
        assert_one_line_error(second, f"{run}: another autonl process (PID {first.pid}, autonl search)")
        assert first.poll() is None
    finally:
        stop_process_tree(first)
