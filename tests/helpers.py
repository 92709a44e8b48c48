"""Assertions, data and generators shared by the tests."""
import json
from pathlib import Path

from hypothesis import strategies as st

from autonl.ir import Choice, Graph, Node, TensorType, all_presets, build_preset
from autonl.ir.choice import same_value
from autonl.ir.types import DTYPES

DATA = Path(__file__).resolve().parent / "data"

# A small graph whose every op TVM tunes quickly (conv, bn, relu6, pool, linear).
TINY_IR = """
graph tiny(%x: f32[1,3,16,16]) {
  %conv = conv2d(%x) {out=16, k=3, s=2}
  %bn = batch_norm(%conv)
  %act = relu6(%bn)
  %pool = global_avg_pool(%act)
  %flat = flatten(%pool)
  %fc = linear(%flat) {out=10}
  return %fc
}
"""


def space_ir(res: int, widths: tuple[int, int, int] = (8, 16, 64), name: str = "tinyspace") -> str:
    """A small MobileNetV2-like graph for search-space tests: a stem, three MBConv blocks (the
    last with a residual add), a head; ``widths``: the stem/first block's, the next two
    blocks' and the head's channels."""
    c1, c2, head = widths
    return f"""
graph {name}(%x: f32[1,3,{res},{res}]) {{
  %stem = conv2d(%x) {{out={c1}, k=3, s=2}}
  %stem_bn = batch_norm(%stem)
  %stem_act = relu6(%stem_bn)
  %mbconv_0 = mbconv(%stem_act) {{out={c1}, e=1, k=3}}
  %mbconv_1 = mbconv(%mbconv_0) {{out={c2}, e=6, k=3, s=2}}
  %mbconv_2 = mbconv(%mbconv_1) {{out={c2}, e=6, k=3}}
  %add_2 = add(%mbconv_2, %mbconv_1)
  %head = conv2d(%add_2) {{out={head}, k=1}}
  %head_bn = batch_norm(%head)
  %head_act = relu6(%head_bn)
  %pool = global_avg_pool(%head_act)
  %flat = flatten(%pool)
  %fc = linear(%flat) {{out=10}}
  return %fc
}}
"""


def space_toml(kernel_nodes: str = "mbconv_2", lightnl_nodes: str | None = None) -> str:
    """A search space over :func:`space_ir`: an optional LightNL candidate after each block
    (or only after ``lightnl_nodes``, a regex), kernel 3 or 5 for ``kernel_nodes`` (a regex),
    and the last block or its skip: 32 networks, or 8 with ``lightnl_nodes="mbconv_2"``."""
    only = f'nodes = "{lightnl_nodes}"\n' if lightnl_nodes else ""
    return f"""
[lightnl]
ratios = [0.25]
strides = [2]
optional = true
norm = "l2"
{only}
[[choice]]
op = "mbconv"
attr = "k"
options = [3, 5]
nodes = "{kernel_nodes}"

[[choice]]
op = "mbconv"
attr = "skip"
options = [false, true]
nodes = "mbconv_2"
only_valid = true
"""


def assert_one_line_error(proc, *fragments):
    """A bad input gives exit != 0 and exactly one `error:` line on stderr, no traceback."""
    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


def start_and_sigkill(command: list[str], run_dir, timeout: float = 300, group: bool = False, env=None) -> None:
    """Start ``command`` (an autonl run writing to ``run_dir``), SIGKILL it as soon as its first
    checkpoint exists, and check that it had not finished by then. ``group``: start it in a
    process group of its own and SIGKILL the whole group (autonl, torchrun and its workers, as
    when a machine goes down)."""
    import os
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=group)
    deadline = time.time() + timeout
    while not (run_dir / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    if group:
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (run_dir / "checkpoint.pt").exists(), "no checkpoint was written"
    assert not (run_dir / "result.json").exists(), "the run finished before it could be killed"


def module_with_params(model):
    """The model's graph lowered to torch (eval mode) with its weights loaded; every tensor of
    the module must be among them (to_torch_with_weights refuses a misfit)."""
    from autonl.backends.torch.lower import to_torch_with_weights
    return to_torch_with_weights(model)


def discrete_presets() -> list[str]:
    """Every registered preset that builds a discrete (deployable) network, sorted."""
    return [name for name in sorted(all_presets()) if not build_preset(name, resolution=32).relaxed]


def method_rows(title: str) -> list[tuple]:
    """The (e, c, n, s, k, nl_ratio, nl_stride, se_ratio) rows of a published architecture, from
    the fenced block after ``title`` in tests/data/method_architectures.md (a verbatim copy of
    method.md section 5)."""
    text = (DATA / "method_architectures.md").read_text()
    start = text.index("```", text.index(title))
    body = text[start + 3:text.index("```", start + 3)]
    nums = [float(x) if "." in x else int(x) for x in body.split()]
    assert nums and len(nums) % 8 == 0, f"{title} table: {len(nums)} numbers, not rows of 8"
    return [tuple(nums[i:i + 8]) for i in range(0, len(nums), 8)]


def randomized(name: str, resolution: int = 224, seed: int = 1):
    """A preset model with random weights and random BN statistics (load_model_or_graph
    randomises BN for graph sources), so that every BN and every LightNL block changes the
    logits."""
    from autonl.backends.loading import load_model_or_graph
    return load_model_or_graph(build_preset(name, resolution=resolution), seed=seed)


def recomputed_val_accuracy(model_folder, data: str, val_size: int) -> tuple[float, int]:
    """(accuracy, images) of the model folder on ``data``'s validation split, recomputed here from
    its predictions (argmax of the logits against the labels), with the validation set that
    `autonl eval` and `autonl train` use."""
    import torch

    from autonl.backends.torch.data import make_loaders
    from autonl.backends.torch.train.weights import load_model

    graph, module = load_model(model_folder)
    resolution = graph.inputs[next(iter(graph.inputs))].shape[-1]
    _, val, _ = make_loaders(data, resolution=resolution, batch_size=32, workers=0, seed=0, val_size=val_size,
                             train_size=32)
    correct = total = 0
    module.eval()
    with torch.no_grad():
        for x, y in val:
            logits = module(x)
            ok = torch.isfinite(logits).all(1)  # non-finite logits count as wrong, as in training's evaluate
            correct += int(((logits.argmax(1) == y) & ok).sum())
            total += len(y)
    assert total == val_size, (total, val_size)
    return correct / total, total


# -- hypothesis strategies: syntactically arbitrary graphs ------------------------------
KEYWORDS = {"graph", "return", "choice", "true", "false"}
ident = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True).filter(lambda s: s not in KEYWORDS)
value_name = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.]{0,10}", fullmatch=True)
scalar = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.text(max_size=8),
)
plain = st.one_of(scalar, st.lists(scalar, max_size=4))


@st.composite
def choices(draw):
    options = draw(st.lists(plain, min_size=2, max_size=4))
    unique = []
    for o in options:
        if not any(same_value(o, u) for u in unique):
            unique.append(o)
    if len(unique) < 2:
        unique = [0, 1]
    return Choice(*unique)


tensor_types = st.builds(lambda d, s: TensorType(d, tuple(s)), st.sampled_from(DTYPES),
                         st.lists(st.integers(0, 4096), max_size=5))


@st.composite
def graphs(draw):
    """Syntactically arbitrary graphs (ops and attributes need not exist): the forms must hold
    anything the IR can hold. Inputs only reference earlier values, so the stored order is
    topological and printing keeps it."""
    names = draw(st.lists(value_name, min_size=1, max_size=12, unique=True))
    n_inputs = draw(st.integers(1, min(3, len(names))))
    g = Graph(draw(ident), {n: draw(tensor_types) for n in names[:n_inputs]})
    defined = list(names[:n_inputs])
    for name in names[n_inputs:]:
        inputs = draw(st.lists(st.sampled_from(defined), max_size=3))
        attrs = draw(st.dictionaries(ident, st.one_of(plain, choices()), max_size=4))
        typ = draw(st.one_of(st.none(), tensor_types))
        g.nodes[name] = Node(name, draw(ident), inputs, attrs, typ)
        defined.append(name)
    g.outputs = draw(st.lists(st.sampled_from(defined), min_size=1, max_size=3))
    return g


def assert_supernet_equals_derived(space, supernet, trials: int, rng, x, rel_tol: float = 0.0, abs_tol: float = 1e-5,
                                   check_cost: bool = True) -> None:
    """For ``trials`` random decision sets, the supernet forced to them gives the logits (and
    the MACs) of the derived network with the weights cut from the supernet (eval mode)."""
    import torch

    from autonl.backends.torch.lower import to_torch
    from autonl.backends.torch.search.supernet import inherit_weights
    from autonl.passes import SearchSpace, analyze_cost
    from autonl.passes.derive import Derive

    for trial in range(trials):
        decisions = SearchSpace(space).random(rng)
        supernet.force(decisions)
        derived = Derive(decisions)(space).graph
        module = to_torch(derived).eval()
        module.load_state_dict(inherit_weights(supernet, module))
        with torch.no_grad():
            a, b = supernet(x), module(x)
        assert (a - b).abs().max().item() <= max(abs_tol, rel_tol * a.abs().max().item()), trial
        if check_cost:
            assert supernet.cost().item() == analyze_cost(derived).macs, trial
    supernet.force(None)


def landed(decisions: dict, run) -> dict:
    """The thresholds' ``decisions`` with the landing's flips (result.json) applied."""
    out = json.loads(json.dumps(decisions))
    for flip in json.loads((run / "result.json").read_text())["landing_flips"]:
        gate, change = flip.split(": ")
        node, attr = gate.split(".")
        before, after = (json.loads(v.strip().replace("True", "true").replace("False", "false"))
                         for v in change.split("->"))
        assert out[node][attr] == before
        out[node][attr] = after
    return out


# latency-table refuses a table whose smallest blocks it cannot time apart from their context
# ("too small to time apart"), which happens on a 2-CPU machine while the suite's other worker
# keeps a core busy; a test that needs a table (not that refusal) measures again, at most 3 times
TIMING_REFUSED = "too small to time apart"


def run_timing_command(run, tries: int = 3):
    """``run()`` (a CompletedProcess of a timing command) again while it is refused for noisy
    timing, at most ``tries`` times; returns the last."""
    for _ in range(tries):
        proc = run()
        if proc.returncode == 0 or TIMING_REFUSED not in proc.stderr:
            return proc
    return proc
