"""The output-folder policy (issue #36): `--out` can never name what the command must not
destroy (the root, the home folder, the working folder or an ancestor, its own inputs), every
input is checked before the old folder is touched, a failed or terminated `--force` puts the
old folder back whole, `-o FILE` never replaces a device or a link, locks follow the real
path, and no child process imports from the working folder.

No test here runs a writing command on a real system path: the root is tested through the
check itself, the home folder through a scratch HOME, the working folder through a scratch cwd.
"""
import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from autonl.backends.locks import lock_path
from autonl.backends.outputs import check_output_folder
from autonl.ir import AutonlError, atomic_write

from conftest import autonl_exe
from helpers import TINY_IR, assert_one_line_error


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` with its sha256: 'byte for byte'."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def old_folder(path: Path) -> Path:
    path.mkdir()
    (path / "mine.txt").write_text("a user's own notes")
    (path / "sub").mkdir()
    (path / "sub" / "data.bin").write_bytes(os.urandom(64))
    return path


def test_the_check_refuses_root_home_working_folder_and_inputs(tmp_path, monkeypatch):
    home, work = tmp_path / "home", tmp_path / "work" / "deep"
    home.mkdir()
    work.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    for out, fragment in (("/", "is the root folder"), ("/..", "is the root folder"),
                          (str(home), "is your home folder"), (str(tmp_path), "holds your home folder"),
                          (".", "is the working folder"), ("..", "holds the working folder"),
                          (str(work) + "/../deep/", "is the working folder")):
        with pytest.raises(AutonlError, match=fragment):
            check_output_folder(out)
    # symbolic links are resolved: a link to the working folder is the working folder
    (tmp_path / "link").symlink_to(work)
    with pytest.raises(AutonlError, match="is the working folder"):
        check_output_folder(tmp_path / "link")
    # the command's inputs: a folder that holds one, or one inside an input
    data = tmp_path / "data"
    (data / "train").mkdir(parents=True)
    with pytest.raises(AutonlError, match="holds the input"):
        check_output_folder(data, inputs=(str(data / "train"),))
    with pytest.raises(AutonlError, match="is inside the input"):
        check_output_folder(data / "train" / "out", inputs=("digits", str(data)))
    with pytest.raises(AutonlError, match="holds the input"):
        check_output_folder(data, inputs=(str(data),))
    # what is fine: a new folder beside them, names that are not paths (presets, built-in data)
    assert check_output_folder(tmp_path / "new", inputs=("autonl-s", "digits", str(data))) == tmp_path / "new"
    assert check_output_folder(work / "runs" / "r") == work / "runs" / "r"


def test_refused_before_any_change(cli, tmp_path):
    """--out ., .., ~ (a scratch HOME) and the command's own source: one line, nothing moved."""
    home = tmp_path / "home"
    old_folder(home)
    work = tmp_path / "w"
    old_folder(work)
    graph = work / "tiny.ir"
    graph.write_text(TINY_IR)
    before = {p: snapshot(p) for p in (home, work)}
    env_home = {"HOME": str(home)}
    for args, cwd, fragment in (
            (["compile", graph, "--backend", "onnx", "--out", ".", "--force"], work, "is the working folder"),
            (["compile", graph, "--backend", "onnx", "--out", "..", "--force"], work, "holds"),   # home and cwd
            (["compile", graph, "--backend", "onnx", "--out", home, "--force"], tmp_path, "is your home folder"),
            (["compile", graph, "--backend", "onnx", "--out", work, "--force"], tmp_path, "holds the input"),
            (["train", graph, "--data", work, "--out", work / "sub", "--force"], tmp_path, "is inside the input"),
            (["search", "mobilenetv2", "--target-macs", "1M", "--data", work, "--out", work, "--force"], tmp_path,
             "holds the input"),
            (["derive", work, "--out", work, "--force"], tmp_path, "holds the input")):
        proc = cli(*args, cwd=cwd, env=env_home)
        assert_one_line_error(proc, fragment)
    assert {p: snapshot(p) for p in (home, work)} == before


def test_run_with_bad_data_keeps_the_old_folder_byte_for_byte(cli, tmp_path):
    out = old_folder(tmp_path / "RF")
    before = snapshot(out)
    assert_one_line_error(cli("run", "--data", tmp_path / "nope", "--out", out, "--force"), "nope")
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["RF"]        # no set-aside folder left
    data = old_folder(tmp_path / "D")
    before = snapshot(data)
    assert_one_line_error(cli("run", "--data", data, "--out", data, "--force"), "holds the input")
    assert snapshot(data) == before


def whole_new_folder(folder: Path) -> bool:
    """Every file the folder's manifest lists, with its size and sha256, and nothing of the old."""
    import json
    manifest = folder / "manifest.json"
    if not manifest.is_file() or (folder / "mine.txt").exists():
        return False
    files = json.loads(manifest.read_text())["files"]
    return all(hashlib.sha256((folder / n).read_bytes()).hexdigest() == f["sha256"] for n, f in files.items())


@pytest.mark.parametrize("moment", ["during the imports", "once the old files are aside", "once the new folder has "
                                    "its manifest", "twice while they are put back"])
def test_sigterm_at_any_moment_of_compile_force_leaves_one_folder_whole(tmp_path, moment):
    """Whatever the moment, the folder afterwards is the old one byte for byte or the new one
    whole, and no set-aside copy is left behind (signals during the renames wait for them)."""
    graph = tmp_path / "tiny.ir"
    graph.write_text(TINY_IR)
    out = old_folder(tmp_path / "deploy")
    before = snapshot(out)
    p = subprocess.Popen([autonl_exe(), "compile", str(graph), "--backend", "onnx", "--out", str(out), "--force"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        if moment == "during the imports":
            time.sleep(0.3)
        else:
            aside = moment != "once the new folder has its manifest"
            while p.poll() is None and time.time() < deadline and not (
                    list(tmp_path.glob(".deploy.old.*")) if aside else (out / "manifest.json").exists()):
                time.sleep(0.002)
        p.send_signal(signal.SIGTERM)
        if moment.startswith("twice"):
            time.sleep(0.01)
            p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=300)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert "Traceback" not in err, err
    # 143: the signal was handled; -15: a second one landed as the interpreter shut down,
    # after the command was over (Python has put the default handler back by then)
    assert p.returncode in (0, 143, -signal.SIGTERM), err
    assert snapshot(out) == before or whole_new_folder(out), (moment, p.returncode, sorted(snapshot(out)))
    assert p.returncode == 0 or "error: terminated (SIGTERM)" in err
    assert not list(tmp_path.glob(".deploy.old.*"))


def test_writing_a_file_never_replaces_a_device_a_fifo_or_a_link(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(AutonlError, match="is not a regular file"):
        atomic_write(fifo, "x")
    assert fifo.is_fifo()
    with pytest.raises(AutonlError, match="is not a regular file"):
        atomic_write("/dev/null", "x")          # a character device: refused before anything is written
    target = tmp_path / "real.ir"
    target.write_text("old")
    link = tmp_path / "link.ir"
    link.symlink_to(target)
    atomic_write(link, "new")                  # through the link: the target changes, the link stays
    assert link.is_symlink() and target.read_text() == "new"


def test_opt_to_dev_full_is_one_line(cli, tmp_path):
    graph = tmp_path / "tiny.ir"
    graph.write_text(TINY_IR)
    assert_one_line_error(cli("opt", graph, "-p", "dce", "-o", "/dev/full"), "is not a regular file")


def test_a_folder_and_a_link_to_it_share_one_lock(tmp_path):
    real = tmp_path / "a5"
    real.mkdir()
    (tmp_path / "a5link").symlink_to(real)
    assert lock_path(tmp_path / "a5link") == lock_path(real) == tmp_path / ".a5.lock"
    assert lock_path(tmp_path / "a5link" / "run") == lock_path(real / "run")
