"""The README's bad-input table, rows not covered elsewhere: a full disk (a real small
tmpfs where this machine lets us mount one, and injected write failures everywhere), and
`autonl run`'s own checks. Each: one `error:` line, non-zero exit, nothing half-written,
earlier outputs intact."""
import errno
import os
import subprocess

import pytest

from autonl.cli.main import main

from helpers import assert_one_line_error


def leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp") or p.name.startswith(".")]


def test_a_write_that_fails_for_a_full_disk_leaves_the_earlier_output_intact(tmp_path, monkeypatch, capsys):
    out = tmp_path / "g.ir"
    assert main(["opt", "mobilenetv2", "-p", "dce", "-o", str(out)]) == 0
    before = out.read_bytes()
    capsys.readouterr()

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)   # every atomic write fails after its data went out
    assert main(["opt", "autonl-l", "-p", "dce", "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "No space left on device" in err[0]
    assert out.read_bytes() == before and leftovers(tmp_path) == []


def test_compile_on_a_full_disk_writes_no_manifest(tmp_path, monkeypatch, capsys):
    out = tmp_path / "deploy"
    calls = {"n": 0}
    real = os.fsync

    def fail_third(fd):           # the first two files go through, the third write fails
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fail_third)
    assert main(["compile", "mobilenetv2", "-r", "32", "-w", "0.35", "--backend", "onnx", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "No space left on device" in err[-1]
    assert not (out / "manifest.json").exists()      # the manifest, written last, says a folder is complete
    assert leftovers(out) == []


@pytest.fixture
def small_tmpfs(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root); the injected-failure tests cover the same path")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def test_a_really_full_tmpfs(small_tmpfs, cli):
    out = small_tmpfs / "g.ir"
    cli("opt", "mobilenetv2", "-p", "dce", "-o", out, check_ok=True)
    before = out.read_bytes()
    free = os.statvfs(small_tmpfs).f_bavail * os.statvfs(small_tmpfs).f_frsize
    (small_tmpfs / "filler").write_bytes(b"x" * max(0, free - 2048))
    assert_one_line_error(cli("opt", "autonl-l", "-p", "dce", "-o", out), str(out), "No space left on device")
    assert out.read_bytes() == before
    assert sorted(p.name for p in small_tmpfs.iterdir()) == ["filler", "g.ir"]


def test_run_refuses_bad_input_before_any_work(cli, tmp_path):
    run = tmp_path / "run"
    assert_one_line_error(cli("run", "--data", tmp_path / "nope", "--out", run), "dataset folder", "does not exist")
    assert_one_line_error(cli("run", "--backend", "tvn", "--out", run), "unknown backend 'tvn'", "did you mean 'tvm'")
    assert_one_line_error(cli("run", "--target-macs", "lots", "--out", run), "lots")
    # a target the space cannot reach: refused before the run folder is made (it was left empty)
    assert_one_line_error(cli("run", "--target-macs", "5M", "--out", run),
                          "target 5M MACs is below the smallest network of this search space")
    assert not run.exists()
    (tmp_path / "file").write_text("x")
    assert_one_line_error(cli("run", "--out", tmp_path / "file" / "run"), "file")
    run.mkdir()
    (run / "keep.txt").write_text("earlier")
    assert_one_line_error(cli("run", "--out", run), "exists and holds keep.txt", "--force")
    assert (run / "keep.txt").read_text() == "earlier"
