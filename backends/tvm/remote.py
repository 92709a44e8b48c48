"""Running a compiled TVM model away from this Python process: the C++ runner (built for the
board, run here under qemu-user), TVM RPC, and per-kernel timing.

The runner (``runner/autonl_runner.cc``) uses only the TVM FFI headers and links against
``libtvm_runtime.so`` and ``libtvm_ffi.so``. For aarch64 these come from the aarch64 wheels
of apache-tvm and apache-tvm-ffi on PyPI (the same versions as this machine's TVM), unpacked
by ``scripts/fetch_arm_runtime.sh`` at set-up time into :func:`runtime_dir` (nothing is
downloaded at run time). They are copied into the deploy folder's ``lib/``, where the runner
finds them (rpath ``$ORIGIN/lib``), so the folder can be copied to a board as it is.

Nothing in a deploy folder is loaded or run before it is checked against the folder's
manifest.json (size and sha256, ``autonl.backends.manifest``): the library, its parameters,
the runner and its runtime libraries, the test input and reference logits. Data (parameters,
arrays) and the library sent over RPC are the very bytes checked; a host library and the
qemu runner are loaded from the folder right after their check.
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import tempfile
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import numpy as np

from autonl.ir import AutonlError
from autonl.ir import atomic_write

from ..manifest import read_manifest, verified_bytes, verify_folder
from ..processes import stop_process_tree

RUNNER = "autonl_runner"
RPC_SERVER = "autonl_rpc_server"     # the board's RPC server in C++ (runner/autonl_rpc_server.cc)
RUNTIME_LIBS = ("libtvm_runtime.so", "libtvm_ffi.so")
LIBRARIES = ("model.so", "model.aarch64.so")
QEMU = "qemu-aarch64"
AARCH64_SYSROOT = "/usr/aarch64-linux-gnu"   # Debian's libc6-arm64-cross, pulled in by g++-aarch64-linux-gnu
_ELF_MACHINES = {62: "x86_64", 183: "aarch64", 40: "arm"}


def tvm_version() -> str:
    from importlib.metadata import version
    return version("apache-tvm")


def runtime_dir() -> Path:
    """Where the aarch64 TVM runtime libraries are looked for: ``$AUTONL_TVM_RUNTIME_AARCH64``,
    else ``~/.cache/autonl/tvm-runtime-aarch64/<apache-tvm version>``."""
    env = os.environ.get("AUTONL_TVM_RUNTIME_AARCH64")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "autonl" / "tvm-runtime-aarch64" / tvm_version()


def elf_machine(path: str | Path | bytes) -> str | None:
    """The architecture an ELF file (a path, or its contents) was built for ('x86_64',
    'aarch64', ...), None if not ELF."""
    if isinstance(path, (bytes, bytearray)):
        head = bytes(path[:20])
    else:
        with open(path, "rb") as f:
            head = f.read(20)
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    machine = int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")
    return _ELF_MACHINES.get(machine, f"machine {machine}")


def find_runtime() -> Path | None:
    d = runtime_dir()
    if all((d / lib).is_file() and elf_machine(d / lib) == "aarch64" for lib in RUNTIME_LIBS):
        return d
    return None


def _runner_files():
    return resources.files("autonl.backends.tvm") / "runner"


def package_runner(out: Path, target, cc: str, log=lambda msg: None) -> dict:
    """Write the runner's and the RPC server's sources, the Makefile and headers into
    ``out``; when the aarch64 runtime libraries are at hand, copy them to ``out/lib`` and
    cross-build ``out/autonl_runner`` and ``out/autonl_rpc_server``."""
    import tvm_ffi.libinfo

    src = _runner_files()
    files = [f"{RUNNER}.cc", f"{RPC_SERVER}.cc", "autonl_main.h", "Makefile"]
    for name in files:
        atomic_write(out / name, (src / name).read_bytes())
    include = out / "include"
    if include.exists():
        shutil.rmtree(include)
    shutil.copytree(tvm_ffi.libinfo.find_include_path(), include,
                    ignore=shutil.ignore_patterns("tvm_ffi_python_*.h"))
    rt = find_runtime()
    if rt is None:
        log(f"runner not built: no aarch64 TVM runtime in {runtime_dir()} (run scripts/fetch_arm_runtime.sh, "
            f"or set AUTONL_TVM_RUNTIME_AARCH64); its source and Makefile are in {out}")
        return {"built": False, "runtime": None, "files": files}
    (out / "lib").mkdir(exist_ok=True)
    for lib in RUNTIME_LIBS:
        shutil.copy2(rt / lib, out / "lib" / f".{lib}.tmp")
        os.replace(out / "lib" / f".{lib}.tmp", out / "lib" / lib)
    for program in (RUNNER, RPC_SERVER):
        build_program(out, program, cc)
    log(f"cross-built {RUNNER} and {RPC_SERVER} with {cc} against the aarch64 TVM runtime in {rt}")
    return {"built": True, "runtime": str(rt), "files": files + [RUNNER, RPC_SERVER] + [f"lib/{lib}" for lib in RUNTIME_LIBS]}


def build_program(folder: Path, program: str, cc: str) -> None:
    """``folder/program`` from ``program.cc``: the Makefile's command, run directly (the build
    machine need not have make)."""
    cmd = [cc, "-std=c++17", "-O2", "-Iinclude", "-Iinclude/dlpack", f"{program}.cc", "-o", f"{program}.tmp",
           "-Wl,--no-as-needed", "-Llib", "-ltvm_runtime", "-ltvm_ffi", "-Wl,-rpath,$ORIGIN/lib"]
    proc = subprocess.run(cmd, cwd=folder, capture_output=True, text=True)
    if proc.returncode != 0:
        first = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[0]
        raise AutonlError(f"building {program} with {cc} failed: {first[:200]}")
    os.replace(folder / f"{program}.tmp", folder / program)


BOARD_README = """# {graph} for {target_name}

Compiled by `autonl compile --backend tvm --target {target_name}` (TVM {tvm}, target
`{target_json}`).

| file | what |
|---|---|
| `{lib}` | the model: a Relax VM executable, aarch64 shared library |
| `model.params` | its weights (`tvm.runtime.save_param_dict`, keys `p0000`... in call order) |
| `input.npy`, `reference_output.npy` | a test input and the logits PyTorch gives for it on this machine |
| `autonl_runner.cc`, `autonl_rpc_server.cc`, `autonl_main.h`, `Makefile`, `include/` | the C++ runner and RPC server, their build, the TVM FFI headers |
| `autonl_runner`, `autonl_rpc_server`, `lib/` | both cross-built for aarch64, and the TVM runtime libraries they load |
| `manifest.json` | inputs, outputs, costs, checks, versions, sha256 of every file |

## On the board (64-bit Raspberry Pi OS, Debian or Ubuntu for arm64)

Copy this folder over and run the model once on the test input:

```bash
scp -r {folder} pi@raspberrypi.local:~/{folder}
ssh pi@raspberrypi.local
cd ~/{folder}
./autonl_runner {lib} model.params input.npy output.npy 50
python3 -c "import numpy as n; print(abs(n.load('output.npy') - n.load('reference_output.npy')).max())"
```

The runner prints `runs N median_ms M min_ms m`; the difference printed last should be below
1e-4. If `autonl_runner` or `lib/` are missing (the aarch64 runtime was not fetched when this
folder was made), build the runner on the board: `pip install apache-tvm=={tvm}` gives
`libtvm_runtime.so` and `libtvm_ffi.so`; copy them to `lib/` and run `make CXX=g++`.

## Tuning on the board, timing it from your machine

`./autonl_rpc_server --port 9090` (built with the runner, `make autonl_rpc_server` on the
board) is a TVM RPC server that needs no Python on the board; `python3 -m
tvm.exec.rpc_server --host 0.0.0.0 --port 9090` works as well where TVM's Python package is
installed. Against it, from your machine: `autonl compile MODEL --backend tvm --target
{target_name} --tune-rpc BOARD:9090 --tune-minutes 30` tunes with the kernels timed on the
board, and `autonl deploy {folder} --rpc BOARD:9090` runs and times this library there.

Without a board: `autonl deploy {folder} --qemu` runs the runner here under qemu-user, and
`qemu-aarch64 -L /usr/aarch64-linux-gnu ./autonl_rpc_server --port 9090` serves RPC from an
emulated aarch64 (its timings are the emulator's, not a board's).
"""


def write_board_readme(out: Path, target, graph_name: str, lib: str, data: dict | None = None) -> str:
    """The board folder's README.md; ``data``: the model's data facts (input, preprocessing,
    class names), so that the board feeds what the model was trained on."""
    from ..checks import describe_data

    text = BOARD_README.format(graph=graph_name, target_name=target.name, tvm=tvm_version(), lib=lib,
                               target_json=json.dumps(target.target_dict()), folder=out.name or "deploy")
    text += "\n" + describe_data(data)
    atomic_write(out / "README.md", text)
    return "README.md"


def load_manifest(folder: str | Path) -> dict:
    """A TVM deploy folder's manifest (read and checked by :func:`read_manifest`)."""
    if not (Path(folder) / "manifest.json").is_file():
        raise AutonlError(f"{folder}: not a TVM deploy folder (no manifest.json); make one with "
                          f"autonl compile --backend tvm --out {folder}")
    manifest = read_manifest(folder)
    if manifest.get("format") != "autonl-deploy" or manifest.get("backend") != "tvm":
        raise AutonlError(f"{folder}: not a TVM deploy folder (manifest backend {manifest.get('backend')!r})")
    return manifest


def library_path(folder: str | Path, manifest: dict) -> Path:
    """The folder's library (``model.so`` or ``model.aarch64.so``, as its manifest says)."""
    name = manifest.get("library")
    if name not in LIBRARIES:
        raise AutonlError(f"{Path(folder) / 'manifest.json'}: library {name!r} is not one autonl compile writes "
                          f"({' or '.join(LIBRARIES)})")
    lib = Path(folder) / name
    if not lib.is_file():
        raise AutonlError(f"{lib}: missing from the deploy folder")
    return lib


def library_bytes(folder: Path, manifest: dict) -> tuple[Path, bytes]:
    """(path, contents) of the folder's library, checked against the manifest; one line if it
    is not an ELF shared library."""
    lib = library_path(folder, manifest)
    data = verified_bytes(folder, lib.name, manifest)
    if elf_machine(data) is None:
        raise AutonlError(f"{lib}: not an ELF shared library, so not a Relax VM executable; compile the folder "
                          f"again with autonl compile --backend tvm")
    return lib, data


def load_params(folder: Path, manifest: dict) -> list:
    """main's weight arguments from ``model.params`` (checked against the manifest), in call order."""
    import tvm

    data = verified_bytes(folder, "model.params", manifest)
    try:
        params = tvm.runtime.load_param_dict(data)
    except Exception as e:  # noqa: BLE001  (TVM raises a generic error for a bad file)
        raise AutonlError(f"{folder / 'model.params'}: not a TVM parameter file ({_last_line(e)})") from None
    return [params[k] for k in sorted(params)]


def load_host_library(folder: Path, manifest: dict, checked: tuple[Path, bytes] | None = None):
    """The folder's library loaded in this process (a host library), checked against the
    manifest first (``checked``: what :func:`library_bytes` returned); one line if it does
    not load or is not a Relax VM executable."""
    import tvm

    lib, data = checked or library_bytes(folder, manifest)
    arch, here = elf_machine(data), os.uname().machine
    if arch != here:
        raise AutonlError(f"{lib}: built for {arch} (target '{manifest.get('target')}'), this machine is {here}")
    try:
        mod = tvm.runtime.load_module(str(lib))
    except Exception as e:  # noqa: BLE001
        raise AutonlError(f"{lib}: cannot be loaded ({_last_line(e)})") from None
    if not mod.implements_function("vm_load_executable"):
        raise AutonlError(f"{lib}: a shared library, but not a Relax VM executable (no vm_load_executable); compile "
                          f"the folder again with autonl compile --backend tvm")
    return mod


def _last_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[-1][:200]


def _npy(src, what) -> np.ndarray:
    """A .npy array from a path or bytes, never unpickling (allow_pickle=False)."""
    try:
        return np.load(io.BytesIO(src) if isinstance(src, bytes) else src, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise AutonlError(f"{what}: cannot read the array ({e})") from None


def _reference(folder: Path, manifest: dict, input_npy: str | None):
    """(input path, input as float32, reference logits or None); the folder's own input and
    reference are checked against the manifest, a user's --input is the user's."""
    if input_npy:
        x_path, x = Path(input_npy), _npy(input_npy, input_npy)
    else:
        x_path = folder / "input.npy"
        x = _npy(verified_bytes(folder, "input.npy", manifest), x_path)
    try:
        x = x.astype(np.float32)
    except (TypeError, ValueError) as e:
        raise AutonlError(f"{x_path}: cannot read the input ({e})") from None
    want = manifest["inputs"][0]["shape"]
    if [int(d) for d in x.shape] != [int(d) for d in want]:
        raise AutonlError(f"{x_path}: input shape {list(x.shape)}, the library takes {want}")
    ref = None
    if input_npy is None:
        ref = _npy(verified_bytes(folder, "reference_output.npy", manifest), folder / "reference_output.npy")
    return x_path, x, ref


def _result(where: str, out: np.ndarray, ref: np.ndarray | None, runs: int, median_ms: float,
            min_ms: float) -> dict:
    res = {"where": where, "runs": runs, "median_ms": median_ms, "min_ms": min_ms, "output_shape": list(out.shape)}
    if ref is not None:
        res["vs_reference_max_abs_diff"] = float(np.abs(out - ref).max())
    return res


def run_qemu(folder: str | Path, runs: int = 5, input_npy: str | None = None) -> dict:
    """Run the deploy folder's aarch64 runner under qemu-user on its test input, after
    checking the runner, its runtime libraries, the library, its parameters and the test
    input and reference against the manifest."""
    folder = Path(folder)
    manifest = load_manifest(folder)
    lib, lib_data = library_bytes(folder, manifest)
    arch = elf_machine(lib_data)
    if arch != "aarch64":
        raise AutonlError(f"{lib}: built for {arch or 'no known architecture'} (target "
                          f"'{manifest.get('target')}'), not aarch64; --qemu runs aarch64 deploy folders")
    runner = folder / RUNNER
    if not runner.is_file():
        raise AutonlError(f"{runner}: not built (no aarch64 TVM runtime when the folder was made); run "
                          f"scripts/fetch_arm_runtime.sh and compile again")
    if shutil.which(QEMU) is None:
        raise AutonlError(f"{QEMU} is not on PATH; on Debian: apt-get install qemu-user")
    verify_folder(folder, [RUNNER, *(f"lib/{name}" for name in RUNTIME_LIBS), "model.params"], manifest)
    _x_path, x, ref = _reference(folder, manifest, input_npy)
    with tempfile.TemporaryDirectory(prefix="autonl-qemu-") as tmp:
        stage = Path(tmp)       # the checked input as float32, and the runner's output
        buf = io.BytesIO()
        np.save(buf, x)
        (stage / "input.npy").write_bytes(buf.getvalue())
        cmd = [QEMU, "-L", AARCH64_SYSROOT, str(runner), str(lib), str(folder / "model.params"),
               str(stage / "input.npy"), str(stage / "output.npy"), str(runs)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            msg = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
            msg = msg.removeprefix("error: ")      # the runner's own prefix: the CLI adds one
            raise AutonlError(f"{RUNNER} under {QEMU} failed: {msg[:300]}")
        m = re.search(r"runs (\d+) median_ms ([\d.]+) min_ms ([\d.]+)", proc.stdout)
        if m is None:
            raise AutonlError(f"{RUNNER} printed no timing: {proc.stdout.strip()[:200]}")
        out = _npy(stage / "output.npy", f"{RUNNER}'s output")
    return _result("qemu-aarch64 (emulated: not the board's latency)", out, ref, int(m.group(1)),
                   float(m.group(2)), float(m.group(3)))


@contextmanager
def qemu_rpc_server(folder: str | Path, port: int, host: str = "127.0.0.1"):
    """The deploy folder's aarch64 ``autonl_rpc_server`` under qemu-user, serving on
    ``host:port`` (yields that address) until the block ends: an emulated board for
    ``--tune-rpc`` and ``autonl deploy --rpc``, timings the emulator's."""
    server = Path(folder) / RPC_SERVER
    if not server.is_file():
        raise AutonlError(f"{server}: not built (no aarch64 TVM runtime when the folder was made); run "
                          f"scripts/fetch_arm_runtime.sh and compile again")
    if shutil.which(QEMU) is None:
        raise AutonlError(f"{QEMU} is not on PATH; on Debian: apt-get install qemu-user")
    proc = subprocess.Popen([QEMU, "-L", AARCH64_SYSROOT, str(server), "--host", host, "--port", str(port)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()       # "listening on HOST:PORT", or EOF when it failed
        if not line.startswith("listening"):
            proc.wait(timeout=10)
            err = (proc.stderr.read().strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
            raise AutonlError(f"{RPC_SERVER} under {QEMU} did not start: {err.removeprefix('error: ')[:300]}")
        yield f"{host}:{port}"
    finally:
        stop_process_tree(proc)


def parse_rpc(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    if not host or not port.isdigit():
        raise AutonlError(f"--rpc {addr!r}: expected HOST:PORT, e.g. 192.168.1.20:9090")
    return host, int(port)


def connect(addr: str, timeout: float = 5.0):
    from tvm import rpc

    host, port = parse_rpc(addr)
    try:   # a plain socket first: TVM's connect retries for a long time before it gives up
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        raise AutonlError(f"RPC server {host}:{port} is not reachable ({e.strerror or e}); start one on the "
                          f"device with: python3 -m tvm.exec.rpc_server --host 0.0.0.0 --port {port}") from None
    try:
        return rpc.connect(host, port, session_timeout=600)
    except Exception as e:  # noqa: BLE001  (TVM raises a generic error for handshake failures)
        raise AutonlError(f"RPC server {host}:{port}: {str(e).strip().splitlines()[-1][:200]}") from None


def check_rpc(addr: str, key: str | None = None) -> None:
    """One line now, before any work, if tuning could not reach the RPC server (or, with
    ``key``, the tracker at ``addr`` or a server under that key); the session is closed
    again at once (a plain server serves one session at a time)."""
    import gc

    from tvm import rpc

    if key is None:
        session = connect(addr)
        del session
        gc.collect()
        return
    host, port = parse_rpc(addr)
    try:
        socket.create_connection((host, port), timeout=5.0).close()
        summary = rpc.connect_tracker(host, port).summary()
    except Exception as e:  # noqa: BLE001  (OSError, or TVM's error for a handshake failure)
        raise AutonlError(f"RPC tracker {host}:{port} is not reachable ({_last_line(e)[:160]}); start one with: "
                          f"python3 -m tvm.exec.rpc_tracker --host 0.0.0.0 --port {port}") from None
    keys = sorted(summary.get("queue_info", {}))
    if key not in keys:
        raise AutonlError(f"RPC tracker {host}:{port} has no server under key {key!r} (it has: "
                          f"{', '.join(keys) or 'none'}); start one on the board with python3 -m tvm.exec.rpc_server "
                          f"--tracker {host}:{port} --key {key}")


def _remote_vm(remote, folder: Path, manifest: dict, checked: tuple[Path, bytes], params: list):
    """Upload the checked library bytes and load them on the RPC server; (vm, device, main's
    weight arguments)."""
    import hashlib

    import tvm
    from tvm import relax

    lib, data = checked
    name = f"autonl_{hashlib.sha256(data).hexdigest()[:16]}.so"
    remote.upload(bytearray(data), target=name)
    try:
        rlib = remote.load_module(name)
    except Exception as e:  # noqa: BLE001
        raise AutonlError(f"the RPC server could not load {lib.name} (built for {elf_machine(data)}, target "
                          f"'{manifest.get('target')}'): is the server on a machine of that kind? "
                          f"({_last_line(e)[:160]})") from None
    dev = remote.cpu()
    try:
        vm = relax.VirtualMachine(rlib, dev)
    except Exception as e:  # noqa: BLE001  (a library without vm_load_executable: AttributeError)
        raise AutonlError(f"{lib}: loads on the RPC server, but is not a Relax VM executable ({_last_line(e)[:160]}); "
                          f"compile the folder again with autonl compile --backend tvm") from None
    return vm, dev, [tvm.runtime.tensor(p.numpy(), dev) for p in params]


def run_rpc(addr: str, folder: str | Path, runs: int = 20, input_npy: str | None = None) -> dict:
    """Upload the deploy folder's library to a TVM RPC server, run it on the test input and
    time it there (the server's clock, TVM's time_evaluator)."""
    import tvm

    folder = Path(folder)
    manifest = load_manifest(folder)
    if manifest.get("entry", {}).get("transform_params"):
        # folders of earlier versions laid the weights out on the device, in a function whose
        # result (an array of tensors) TVM RPC cannot return; autonl compile now does it once
        raise AutonlError(f"{folder}: compiled by an earlier autonl that lays the weights out on the device, which "
                          f"TVM RPC cannot do; compile the folder again with autonl compile --backend tvm")
    checked = library_bytes(folder, manifest)       # everything checked before connecting
    params = load_params(folder, manifest)
    _x_path, x, ref = _reference(folder, manifest, input_npy)
    remote = connect(addr)
    vm, dev, args = _remote_vm(remote, folder, manifest, checked, params)
    xt = tvm.runtime.tensor(x, dev)
    out = vm["main"](xt, *args).numpy()
    vm.save_function("main", "autonl_timed", xt, *args)
    timer = vm.time_evaluator("autonl_timed", dev, number=1, repeat=runs, min_repeat_ms=0)
    times = [t * 1e3 for t in timer().results]
    return _result(f"rpc {addr}", out, ref, len(times), statistics.median(times), min(times))


def profile(folder: str | Path, input_npy: str | None = None, runs: int = 5) -> dict:
    """Per-kernel time of a deploy folder's library on this machine.

    TVM 0.27's runtime ships no Relax VM profiler (``VirtualMachine`` has no ``profile``), so
    this times each call the VM makes (fused kernels and VM builtins) through the VM's
    instrument hook: wall time around the call, summed per kernel over one run of ``main``,
    median over ``runs`` runs. The hook adds a Python call around each kernel; the total is
    therefore a little above an uninstrumented run. It runs where the library can be
    loaded: here for host libraries, on the board (pip install apache-tvm, autonl) for
    aarch64 ones.
    """
    import time as _time

    import tvm
    from tvm import relax
    from tvm.runtime.vm import VMInstrumentReturnKind

    from ..latency.timing import median_of_calls

    folder = Path(folder)
    manifest = load_manifest(folder)
    lib, data = checked = library_bytes(folder, manifest)
    arch, here = elf_machine(data), os.uname().machine
    if arch != here:
        raise AutonlError(f"{lib.name} is built for {arch} (target '{manifest.get('target')}'), this machine is "
                          f"{here}: run autonl profile on the device itself (pip install apache-tvm there), or time "
                          f"the whole model with autonl deploy --rpc / --qemu")
    args = load_params(folder, manifest)
    _x_path, x, _ref = _reference(folder, manifest, input_npy)
    dev = tvm.cpu()
    vm = relax.VirtualMachine(load_host_library(folder, manifest, checked), dev)
    lifted = manifest.get("entry", {}).get("transform_params")
    if lifted:          # the schema allows only the name autonl compile gave it (read_manifest)
        try:
            transform = vm[lifted]
        except (AttributeError, ValueError):
            raise AutonlError(f"{folder / 'manifest.json'}: entry.transform_params names {lifted!r}, which "
                              f"{lib.name} does not have; compile the folder again with autonl compile "
                              f"--backend tvm") from None
        args = list(transform(args))
    xt = tvm.runtime.tensor(x, dev)
    # the whole model's wall time (one warm-up call: allocations, thread pool), in microseconds
    model_us = median_of_calls({0: lambda: vm["main"](xt, *args)}, 1, runs, warmup=1)[0] * 1e3
    run_totals: list[dict[str, list]] = []
    current: dict[str, list] = {}
    started = [0.0]

    def instrument(func, symbol, before_run, ret_value, *call_args):
        if before_run:
            started[0] = _time.perf_counter()
        else:
            row = current.setdefault(str(symbol), [0, 0.0])
            row[0] += 1
            row[1] += _time.perf_counter() - started[0]
        return VMInstrumentReturnKind.NO_OP

    vm.set_instrument(instrument)
    for _ in range(runs):
        current = {}
        vm["main"](xt, *args)
        run_totals.append(current)
    rows = []
    for name in run_totals[0]:
        totals = [r[name][1] for r in run_totals if name in r]
        rows.append({"kernel": name, "calls": run_totals[0][name][0], "total_us": statistics.median(totals) * 1e6})
    rows.sort(key=lambda r: -r["total_us"])
    # VM builtins (allocation, reshape views, ...) take a microsecond or two each, about what
    # the hook itself costs: they are reported apart, and shares are of the kernels' time.
    kernels = [r for r in rows if not r["kernel"].startswith("vm.builtin.")]
    builtins = [r for r in rows if r["kernel"].startswith("vm.builtin.")]
    total = sum(r["total_us"] for r in kernels)
    for r in kernels:
        r["share"] = r["total_us"] / total if total else 0.0
    return {"where": "local (VM instrument hook)", "library": lib.name, "target": manifest.get("target"),
            "runs": runs, "model_us": model_us, "kernels_us": total, "kernels": kernels,
            "vm_builtins": builtins}
