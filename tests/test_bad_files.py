"""Issue #36, round 3: every file autonl reads back is checked before it is used, data loading
cannot hang, and the audit's tracebacks and unclear lines are one clear `error:` line each.

Table-driven and cheap: most rows edit one small file and read it through the library or the
command, in this process; nothing here trains. Each table's rows are the audit's bad inputs:

1. the JSON reader shared by every such file (non-finite numbers, repeated keys, nesting,
   size, FIFOs);
2. latency tables (NaN, infinite and huge entries, a negative fixed part, duplicate entries,
   options that contradict their key, a NaN probe, 5,000-deep nesting) through the library and
   through search, bench and latency-check; a table changed under a resumed search;
3. a model folder's data.json (class count, std 0, NaN mean, unknown format, duplicate names);
4. decisions and manifests (an edited entry.transform_params, digests, sizes, paths);
5. deploy files whose size is checked from metadata before they are read (a sparse 2 GB file);
6. datasets: a FIFO with an image's name, one class, a class name that is not UTF-8;
7. weights: a negative BN variance, pickled objects; eval's loss with no finite logit;
8. the lines of the audit's "unclear" list and its out-of-memory traceback.
"""
import json
import os
import resource
import signal
import statistics
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from autonl.backends.latency import LatencyTable
from autonl.backends.manifest import read_manifest, verified_bytes
from autonl.backends.torch.config import SearchConfig
from autonl.cli.main import main
from autonl.ir import AutonlError, load_decisions
from autonl.ir.json_file import read_json_file

from helpers import TINY_IR, assert_one_line_error


@contextmanager
def no_hang(seconds: int = 30):
    """Fail (instead of hanging the suite) if the body blocks, e.g. on opening a FIFO."""
    def alarm(signum, frame):
        raise TimeoutError(f"blocked for {seconds} s")
    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


# -- 1. the reader ----------------------------------------------------------------------------
READER = [
    ('{"a": NaN}', "NaN is not a number a file may hold"),
    ('{"a": -Infinity}', "-Infinity is not a number a file may hold"),
    ('{"a": 1e400}', "1e400 is not a finite number"),
    ('{"a": 1, "a": 2}', "the key 'a' appears twice in one object"),
    ('{"a": ' + deep(5000) + "}", "nested deeper than 64 levels"),
    ('{"a": 1', "invalid JSON"),
    (b'{"a": "\xff"}', "not UTF-8 text"),
]


@pytest.mark.parametrize("text, says", READER, ids=[s[:24] for _, s in READER])
def test_the_reader_refuses_what_json_would_take(tmp_path, text, says):
    path = tmp_path / "f.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(AutonlError, match=f"^{path}"):
        read_json_file(path, "thing")
    with pytest.raises(AutonlError) as e:
        read_json_file(path, "thing")
    assert says in str(e.value)


def test_the_reader_opens_only_regular_files_of_bounded_size(tmp_path):
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    with no_hang(), pytest.raises(AutonlError, match="not a regular file"):
        read_json_file(fifo, "thing")
    with pytest.raises(AutonlError, match="not a regular file"):
        read_json_file(tmp_path, "thing")
    big = tmp_path / "big.json"
    big.write_text("[" + "0," * 600 + "0]")
    with pytest.raises(AutonlError, match=r"1,203 bytes, more than a thing may hold \(1,000\)"):
        read_json_file(big, "thing", max_bytes=1000)
    with pytest.raises(AutonlError, match="no such thing"):
        read_json_file(tmp_path / "none.json", "thing")


# -- 2. latency tables ----------------------------------------------------------------------------
def table_doc() -> dict:
    """A small well-formed table: one searchable node with two options."""
    return {
        "format": "autonl-latency-table", "version": 1, "resolution": 32, "space_hash": "0" * 64, "fixed_ms": 0.2,
        "provenance": {"backend": "onnx", "threads": 1},
        "probe": {"ms": 1.0, "decisions": {"b": {"k": 3}}},
        "nodes": {"b": {"op": "mbconv", "input": [1, 8, 16, 16], "choices": {"k": [3, 5]},
                        "entries": [{"options_key": "k=3", "options": {"k": 3}, "ms": 0.5},
                                    {"options_key": "k=5", "options": {"k": 5}, "ms": 0.7}]}},
    }


def _entry(d, **values):
    d["nodes"]["b"]["entries"][0].update(values)


TABLES = [
    ("nan entry", lambda d: _entry(d, ms=float("nan")), "NaN is not a number"),
    ("inf entry", lambda d: _entry(d, ms=float("inf")), "Infinity is not a number"),
    ("1e308 entry", lambda d: _entry(d, ms=1e308), "at nodes/b/entries/0/ms: 1e+308 is greater than the maximum"),
    ("negative entry", lambda d: _entry(d, ms=-1.0), "at nodes/b/entries/0/ms: -1.0 is less than the minimum"),
    ("negative fixed part", lambda d: d.update(fixed_ms=-5.0), "predicts -4.5 ms for the fastest sub-network"),
    ("duplicate entry", lambda d: d["nodes"]["b"]["entries"].append(dict(d["nodes"]["b"]["entries"][0])),
     "entry 2 (k=3): the same options as entry 0"),
    ("options against key", lambda d: _entry(d, options={"k": 5}), "its options {\"k\": 5} say k=5, not its key"),
    ("option not offered", lambda d: _entry(d, options={"k": 7}, options_key="k=7"),
     "k=7 is not one of the node's options [3, 5]"),
    ("missing combination", lambda d: d["nodes"]["b"]["entries"].pop(), "has 1 entries for its 2 combinations"),
    ("nan probe", lambda d: d["probe"].update(ms=float("nan")), "NaN is not a number"),
    ("zero probe", lambda d: d["probe"].update(ms=0), "at probe/ms: 0 is less than or equal to the minimum of 0"),
    ("5000 deep", None, None),        # written by hand below (json.dumps recurses too)
]


def write_table(path: Path, edit=None, raw: str | None = None) -> Path:
    d = table_doc()
    if edit is not None:
        edit(d)
    path.write_text(raw if raw is not None else json.dumps(d))
    return path


@pytest.mark.parametrize("name, edit, says", TABLES, ids=[t[0] for t in TABLES])
def test_bad_latency_tables_are_one_line(tmp_path, name, edit, says):
    LatencyTable.read(write_table(tmp_path / "ok.json"))          # the unedited table is fine
    path = write_table(tmp_path / "t.json", edit)
    if says is None:
        text = json.dumps(table_doc())
        path.write_text(text[:-1] + ', "extra": ' + deep(5000) + "}")
        says = "nested deeper than 64 levels"
    with pytest.raises(AutonlError) as e:
        LatencyTable.read(path)
    assert str(e.value).startswith(f"{path}") and says in str(e.value), str(e.value)


def test_a_repeated_node_is_refused(tmp_path):
    text = json.dumps(table_doc())
    node = json.dumps(table_doc()["nodes"]["b"])
    path = tmp_path / "t.json"
    path.write_text(text.replace('"nodes": {', '"nodes": {"b": ' + node + ", ", 1))
    with pytest.raises(AutonlError, match="the key 'b' appears twice"):
        LatencyTable.read(path)


def test_commands_reading_a_bad_table_say_one_line(cli, tmp_path):
    """search and bench (a NaN probe printed 'nan ms', a 5,000-deep table a RecursionError),
    latency-check (matplotlib's ValueError on a NaN probe)."""
    nan_probe = write_table(tmp_path / "nan.json", lambda d: d["probe"].update(ms=float("nan")))
    too_deep = tmp_path / "deep.json"
    too_deep.write_text(json.dumps(table_doc())[:-1] + ', "extra": ' + deep(5000) + "}")
    graph = tmp_path / "tiny.ir"
    graph.write_text(TINY_IR)
    for table, says in ((nan_probe, "NaN is not a number"), (too_deep, "nested deeper than 64 levels")):
        assert_one_line_error(cli("search", "mobilenetv2", "--target-latency", "1ms", "--latency-table", table,
                                  "--out", tmp_path / "s"), str(table), says)
        # both fail before any timing, so they run in this process (no onnxruntime pool is made)
        assert_one_line_error(cli("bench", graph, "--threads", "1", "--table", table, real=False), str(table), says)
        assert_one_line_error(cli("latency-check", table, real=False), str(table), says)
    assert not (tmp_path / "s").exists()


def test_a_resumed_search_refuses_a_table_that_changed_since_it_began(tmp_path):
    """The search records its table's sha256 (SearchConfig, saved in search_config.json and the
    checkpoint); the config a resumed run is rebuilt from refuses another table."""
    table = write_table(tmp_path / "t.json")
    cfg = SearchConfig(target_latency_ms=1.0, latency_table=str(table))
    assert cfg.latency_table_sha256 and len(cfg.latency_table_sha256) == 64
    saved = json.loads(json.dumps(asdict(cfg)))
    SearchConfig.from_dict(saved)                      # unchanged: resumes
    write_table(table, lambda d: _entry(d, ms=0.05))
    with pytest.raises(AutonlError, match=f"^{table}: changed since this search began .*put that table back"):
        SearchConfig.from_dict(saved)
    SearchConfig.from_dict({**saved, "latency_table_sha256": None})     # a run from before: not checked


def test_search_resume_with_a_changed_table_is_one_line(cli, tmp_path):
    from helpers import run_timing_command, space_ir
    space = tmp_path / "tiny.ir"
    space.write_text(space_ir(32))
    table = tmp_path / "table.json"
    proc = run_timing_command(lambda: cli("latency-table", space, "--threads", "1", "--rounds", "2", "--calibration",
                                          "2", "--out", table))
    assert proc.returncode == 0, proc.stderr
    # a target within this table's reach, however fast the machine was: halfway between its
    # smallest and largest calibration networks (a fixed 0.05 ms was out of reach on a busy one)
    target = statistics.mean(r["predicted_ms"] for r in json.loads(table.read_text())["fixed"]["calibration"])
    run = tmp_path / "s"
    cli("search", space, "--data", "digits", "--steps", "3", "--warmup-steps", "1", "--workers", "0", "--batch-size",
        "8", "--train-size", "16", "--val-size", "8", "--target-latency", f"{target:.4f}ms", "--latency-table", table,
        "--out", run, check_ok=True)
    assert json.loads((run / "search_config.json").read_text())["latency_table_sha256"]
    doc = json.loads(table.read_text())
    doc["fixed_ms"] += 0.001                  # measured again, say
    table.write_text(json.dumps(doc))
    assert_one_line_error(cli("search", "--resume", "--out", run), f"{table}: changed since this search began")


# -- 3. a model folder's data.json --------------------------------------------------------------
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny model folder (TINY_IR: 10 logits) with the data.json training writes."""
    import torch

    from autonl.backends.torch.data import data_facts
    from autonl.backends.torch.lower import to_torch
    from autonl.backends.torch.train.weights import save_model
    from autonl.ir import parse_graph
    from autonl.ir.verify import infer_and_verify

    graph = parse_graph(TINY_IR)
    infer_and_verify(graph)
    torch.manual_seed(0)
    return save_model(graph, to_torch(graph).eval(), tmp_path_factory.mktemp("models") / "m",
                      data_facts("digits", 16))


def copy_model(model_dir, tmp_path) -> Path:
    import shutil
    return Path(shutil.copytree(model_dir, tmp_path / "m"))


def _input(d, **values):
    d["input"].update(values)


FACTS = [
    ("3 class names, 10 logits", lambda d: d.update(classes=["a", "b", "c"]),
     "names 3 classes, the model 'tiny' has 10 logits"),
    ("std 0", lambda d: _input(d, std=[0.229, 0, 0.225]), "at input/std/1: 0 is less than or equal to the minimum"),
    ("NaN mean", lambda d: _input(d, mean=[float("nan")] * 3), "NaN is not a number"),
    ("unknown format", lambda d: d.update(format="autonl-whatever"), "at format: 'autonl-data' was expected"),
    ("duplicate class names", lambda d: d["classes"].__setitem__(1, "0"), "at classes:"),
    ("empty class name", lambda d: d["classes"].__setitem__(1, ""), "at classes/1:"),
    ("two means", lambda d: _input(d, mean=[0.5, 0.5]), "at input/mean:"),
    ("eval crop 5", lambda d: d["augmentation"].update(eval_crop=5), "at augmentation/eval_crop:"),
]


@pytest.mark.parametrize("name, edit, says", FACTS, ids=[f[0] for f in FACTS])
def test_a_tampered_data_json_never_reaches_a_manifest(cli, model_dir, tmp_path, name, edit, says):
    folder = copy_model(model_dir, tmp_path)
    facts = json.loads((folder / "data.json").read_text())
    edit(facts)
    (folder / "data.json").write_text(json.dumps(facts))
    out = tmp_path / "deploy"
    assert_one_line_error(cli("compile", folder, "--backend", "onnx", "--out", out, "--check-images", "0"),
                          str(folder / "data.json"), says)
    assert not out.exists()


def test_eval_refuses_a_data_json_of_another_class_count(cli, model_dir, tmp_path):
    folder = copy_model(model_dir, tmp_path)
    facts = json.loads((folder / "data.json").read_text())
    (folder / "data.json").write_text(json.dumps({**facts, "classes": ["a", "b", "c"]}))
    assert_one_line_error(cli("eval", folder, "--data", "digits", "--val-size", "4"), "names 3 classes")


# -- 4. decisions and manifests -------------------------------------------------------------------
@pytest.mark.parametrize("text, says", [
    ('{"mbconv_1": {"k": NaN}}', "NaN is not a number"),
    ('{"mbconv_1": {"k": 3}, "mbconv_1": {"k": 5}}', "the key 'mbconv_1' appears twice"),
    ('{"mbconv_1": {"k": ' + deep(5000) + "}}", "nested deeper than 64 levels"),
    ('{"mbconv_1": 3}', "at mbconv_1: 3 is not of type 'object'"),
    ('[1, 2]', "at (top level): [1, 2] is not of type 'object'"),
])
def test_bad_decisions_files_are_one_line(tmp_path, text, says):
    path = tmp_path / "d.json"
    path.write_text(text)
    with pytest.raises(AutonlError) as e:
        load_decisions(path)
    assert str(e.value).startswith(f"{path}") and says in str(e.value), str(e.value)


def deploy_manifest() -> dict:
    return {"format": "autonl-deploy", "version": 1, "backend": "tvm", "library": "model.so",
            "inputs": [{"name": "x", "shape": [1, 3, 16, 16], "dtype": "float32"}],
            "outputs": [{"name": "fc", "shape": [1, 10], "dtype": "float32"}],
            "entry": {"transform_params": None, "main": "main"}, "data": None,
            "files": {"model.params": {"bytes": 10, "sha256": "0" * 64}}}


MANIFESTS = [
    ("edited transform_params", lambda m: m["entry"].update(transform_params="nope"),
     "at entry/transform_params: 'nope' is not one of"),
    ("transform_params a number", lambda m: m["entry"].update(transform_params=42), "at entry/transform_params"),
    ("negative size", lambda m: m["files"]["model.params"].update(bytes=-1), "at files/model.params/bytes"),
    ("bad digest", lambda m: m["files"]["model.params"].update(sha256="xyz"), "at files/model.params/sha256"),
    ("a path out of the folder", lambda m: m["files"].update({"../x": {"bytes": 1, "sha256": "0" * 64}}),
     "at files: '../x' does not match"),
    ("a TVM shape with a name", lambda m: m["inputs"][0].update(shape=["N", 3, 16, 16]), "at inputs/0/shape/0"),
    ("NaN in the checks", lambda m: m.update(checks={"diff": float("nan")}), "NaN is not a number"),
]


@pytest.mark.parametrize("name, edit, says", MANIFESTS, ids=[m[0] for m in MANIFESTS])
def test_bad_manifests_are_one_line(tmp_path, name, edit, says):
    m = deploy_manifest()
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    read_manifest(tmp_path)
    edit(m)
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(AutonlError) as e:
        read_manifest(tmp_path)
    assert str(e.value).startswith(str(tmp_path / "manifest.json")) and says in str(e.value), str(e.value)
    assert "the folder was changed after autonl compile wrote it" in str(e.value)


def test_profile_of_a_folder_with_an_edited_entry_is_one_line(cli, tmp_path):
    m = deploy_manifest()
    m["entry"]["transform_params"] = "nope"
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    assert_one_line_error(cli("profile", tmp_path), "entry/transform_params", "autonl compile")


def test_a_written_manifest_is_valid_json_even_with_non_finite_figures(tmp_path):
    from autonl.backends.manifest import write_manifest
    (tmp_path / "a.bin").write_bytes(b"abc")
    write_manifest(tmp_path, {"format": "autonl-deploy", "version": 1, "checks": {"diff": float("inf")}}, ["a.bin"])
    assert read_manifest(tmp_path)["checks"]["diff"] == "inf"


# -- 5. sizes from metadata before reading ----------------------------------------------------------
def test_a_deploy_file_larger_than_its_manifest_says_is_refused_unread(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps(deploy_manifest()))
    with open(tmp_path / "model.params", "wb") as f:         # 2 GB, sparse: no disk, but 2 GB to read
        f.truncate(2 << 30)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(AutonlError, match=r"model.params: 2147483648 bytes, manifest.json says 10"):
        verified_bytes(tmp_path, "model.params")
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 256, f"{grown_mb:.0f} MB read"
    (tmp_path / "model.params").unlink()
    os.mkfifo(tmp_path / "model.params")                      # a FIFO in its place: never opened
    with no_hang(), pytest.raises(AutonlError, match="model.params"):
        verified_bytes(tmp_path, "model.params")


# -- 6. datasets ----------------------------------------------------------------------------
def image_folder(root: Path, classes=("a", "b")) -> Path:
    for split in ("train", "val"):
        for ci, c in enumerate(classes):
            folder = root / split / c
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(2):
                arr = np.random.default_rng(10 * ci + i).integers(0, 256, (12, 12, 3), dtype=np.uint8)
                Image.fromarray(arr).save(folder / f"{i}.png")
    return root


def test_a_fifo_named_like_an_image_never_hangs_loading(tmp_path):
    from autonl.backends.torch.data import fitted_settings, make_loaders

    root = image_folder(tmp_path / "ds")
    fifo = root / "train" / "a" / "pipe.jpg"
    os.mkfifo(fifo)
    with no_hang():
        with pytest.raises(AutonlError, match=f"image '{fifo}' is not a regular file .*pass --skip-corrupt"):
            make_loaders(str(root), 16, 2, workers=0)
        with pytest.warns(UserWarning, match="skipped 1"):
            train, _, _ = make_loaders(str(root), 16, 2, workers=0, skip_corrupt=True)
        assert str(fifo) not in set(train.dataset.paths)
        fitted_settings(str(root))              # reads image headers for the resolution


def test_a_dataset_of_one_class_is_refused_before_any_work(cli, tmp_path):
    root = image_folder(tmp_path / "one", classes=("cat",))
    out = tmp_path / "run"
    assert_one_line_error(cli("train", "mobilenetv2", "-r", "32", "-w", "0.35", "--data", root, "--steps", "1",
                              "--out", out), "has 1 class (cat): a classifier needs at least 2")
    assert not out.exists()


def test_a_class_name_that_is_not_utf8_is_refused_at_the_scan(cli, tmp_path):
    """It failed `autonl run` with a UnicodeEncodeError after every stage had run."""
    from autonl.backends.torch.data.image_folder import scan_image_folder

    root = image_folder(tmp_path / "ds")
    for split in ("train", "val"):
        os.rename(root / split / "b", os.fsencode(root / split) + b"/caf\xe9")
    with pytest.raises(AutonlError, match=r"class folder 'caf\\xe9' .* not valid UTF-8.*rename the folder"):
        scan_image_folder(root)
    out = tmp_path / "run"        # refused before any stage, so it can run in this process
    assert_one_line_error(cli("run", "--data", root, "--out", out, real=False), "not valid UTF-8")
    assert not out.exists()


# -- 7. weights and evaluation ----------------------------------------------------------------------
def test_a_negative_running_variance_is_refused_as_such(model_dir, tmp_path):
    import torch

    from autonl.backends.torch.train.weights import load_model
    folder = copy_model(model_dir, tmp_path)
    state = torch.load(folder / "weights.pt", weights_only=True)
    state["bn.running_var"][:4] = -1.0
    torch.save(state, folder / "weights.pt")
    with pytest.raises(AutonlError, match=r"bn.running_var holds 4 negative values .* never negative"):
        load_model(folder)


def test_non_finite_logits_without_lightnl_are_not_blamed_on_its_norm(cli, model_dir, tmp_path):
    import torch
    folder = copy_model(model_dir, tmp_path)
    state = torch.load(folder / "weights.pt", weights_only=True)
    state["fc.weight"].fill_(3e38)                       # finite, but the logits overflow
    torch.save(state, folder / "weights.pt")
    line = assert_one_line_error(cli("compile", folder, "--backend", "onnx", "--out", tmp_path / "d",
                                     "--check-images", "8"), "give non-finite logits", "weights are at fault")
    assert 'norm="l2"' not in line
    assert not (tmp_path / "d").exists()


def test_pickled_objects_in_weights_are_refused_saying_why(model_dir, tmp_path):
    import torch

    from autonl.backends.torch.train.weights import read_torch_file
    folder = copy_model(model_dir, tmp_path)
    state = torch.load(folder / "weights.pt", weights_only=True)
    torch.save({**state, "extra": Path("x")}, folder / "weights.pt")        # a pickled object
    with pytest.raises(AutonlError) as e:
        read_torch_file(folder / "weights.pt")
    line = str(e.value)
    assert "holds pickled Python objects (pathlib" in line and "never unpickles" in line
    assert line.endswith("(a weights file of tensors)")


def test_eval_has_no_loss_when_no_logit_is_finite():
    import torch

    from autonl.backends.torch.train.evaluation import evaluate

    class Overflow(torch.nn.Module):
        def forward(self, x):
            return torch.full((x.shape[0], 3), float("inf"))

    loader = [(torch.zeros(4, 1), torch.zeros(4, dtype=torch.long))]
    res = evaluate(Overflow(), loader, torch.device("cpu"))
    assert res["val_loss"] is None and res["val_nonfinite"] == 4 and res["val_acc"] == 0


# -- 8. the unclear lines, and memory ---------------------------------------------------------------
def test_run_does_not_tell_to_pass_an_option_it_lacks(cli, tmp_path):
    root = image_folder(tmp_path / "ds")
    (root / "train" / "a" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    proc = cli("run", "--data", root, "--out", tmp_path / "run", "--search-steps", "2", "--train-steps", "1")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]   # after the stage lines
    assert len(errors) == 1 and errors[0] == proc.stderr.strip().splitlines()[-1], proc.stderr
    assert "bad.png" in errors[0] and "remove or replace that file" in errors[0]
    assert "pass --skip-corrupt" not in errors[0]


def test_latency_commands_neither_list_nor_take_int8_options(cli):
    for command in ("latency-table", "bench"):
        text = cli(command, "--help", real=False, check_ok=True).stdout
        assert "--int8" not in text and "--calib-images" not in text, command
    assert_one_line_error(cli("latency-table", "mobilenetv2", "--int8", "--out", "/nonexistent/t.json", real=False),
                          "--int8 applies to autonl compile", "fp32")
    assert_one_line_error(cli("bench", "mobilenetv2", "--calib-images", "3", real=False), "--calib-images applies")


def test_tune_space_never_writes_into_a_folder_that_is_not_a_database(cli, model_dir, tmp_path):
    folder = copy_model(model_dir, tmp_path)
    before = sorted(p.name for p in folder.iterdir())
    assert_one_line_error(cli("tune-space", "mobilenetv2", "-r", "32", "--tune-trials", "1", "--out", folder),
                          "holds data.json", "no tuning database")
    assert sorted(p.name for p in folder.iterdir()) == before


def test_an_interrupted_tuning_compile_says_how_to_resume(tmp_path):
    from autonl.cli.options import WRITING, resume_hint

    out = tmp_path / "deploy"
    (out / "tuning").mkdir(parents=True)
    WRITING[:] = [("compile", str(out))]
    try:
        assert resume_hint() == ""                  # no tuning begun: nothing to resume
        (out / "tuning" / "tuning_plan.json").write_text("{}")
        assert "run the same command with --resume" in resume_hint() and str(out / "tuning") in resume_hint()
        WRITING.append(("tuning-dir", str(tmp_path / "db")))
        (tmp_path / "db").mkdir()
        assert resume_hint() == ""                  # --tuning-dir: that database is the one that counts
    finally:
        WRITING.clear()


@pytest.mark.parametrize("error", [
    RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you "
                 "tried to allocate 536870912 bytes. Error code 12 (Cannot allocate memory)"),
    MemoryError(),
])
@pytest.mark.parametrize("command", ["compile", "bench"])
def test_running_out_of_memory_is_one_line_saying_what_to_do(monkeypatch, capsys, tmp_path, error, command):
    """A 4096x4096 input under a memory limit: torch's allocator error, or numpy's MemoryError."""
    from autonl.workflows import latency as latency_workflow
    from autonl.workflows import compile as compile_workflow

    def allocate(*args, **kwargs):
        raise error
    monkeypatch.setattr(compile_workflow if command == "compile" else latency_workflow, "load_deployable", allocate)
    args = ["compile", "mobilenetv2", "-r", "4096", "--out", str(tmp_path / "d")] if command == "compile" else \
        ["bench", "mobilenetv2", "-r", "4096"]
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: out of memory: "), err
    assert "smaller input (-r)" in err[0] and "internal error" not in err[0]


def test_writing_to_a_pipe_through_proc_is_refused(tmp_path):
    from autonl.ir import atomic_write
    r, w = os.pipe()
    try:
        with pytest.raises(AutonlError, match="is not a regular file"):
            atomic_write(f"/proc/self/fd/{w}", "x")       # what /dev/stdout is when piped
    finally:
        os.close(r)
        os.close(w)
