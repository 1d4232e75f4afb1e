"""Instance limits, enforced for real: child processes are OOM-killed, throttled, or get MemoryError.

The cgroup tests need a writable cgroup tree (v1 or v2, as root); they skip, saying why, where
there is none. ``detect()`` is also checked on fake directory trees, since it only reads them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from servelab.errors import ConfigError, InvalidNameError, LimitsError
from servelab.platform.limits import (
    SPAWN_BASELINE_MB,
    THREAD_ADDRESS_SPACE_MB,
    InstanceLedger,
    InstanceLimits,
    LimitsInfo,
    ResourceLimits,
    cleanup_stale,
    cpus_for_memory,
    detect,
)
from servelab.platform.limits.stale import process_start_ticks

REAL = detect()
needs_cgroup = pytest.mark.skipif(
    REAL.mode == "rlimit", reason=f"no writable cgroup hierarchy here: {REAL.reason}")

# Allocates and touches `step` MB at a time, printing the running total, up to `total` MB.
TOUCH = textwrap.dedent("""
    import sys
    step, total = int(sys.argv[1]), int(sys.argv[2])
    held = []
    for mb in range(step, total + 1, step):
        held.append(b"x" * (step << 20))  # bytes * n writes every page, unlike bytearray(n)
        print(mb, flush=True)
""")

# Spins for `wall` seconds and prints the CPU seconds it got and the wall seconds it took.
SPIN = textwrap.dedent("""
    import sys, time
    wall = float(sys.argv[1])
    t0, c0 = time.monotonic(), time.process_time()
    while time.monotonic() - t0 < wall:
        pass
    print(time.process_time() - c0, time.monotonic() - t0)
""")


def _run(limits: InstanceLimits, code: str, *args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], preexec_fn=limits.preexec_fn(),
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module", autouse=True)
def _remove_our_group_dir() -> Iterator[None]:
    """Leave no empty servelab/ behind in this session's own memory cgroup (it would block its rmdir).

    The v1 cpu one may be shared with other sessions' platforms, so it stays.
    """
    yield
    if REAL.mode != "rlimit":
        mem = InstanceLimits("probe", ResourceLimits(128), REAL).paths
        with contextlib.suppress(OSError):
            (mem.get("memory") or mem["unified"]).parent.rmdir()


@pytest.fixture
def make_limits() -> Iterator:
    """Builds InstanceLimits with ids unique to this test process, and destroys them afterwards."""
    made: list[InstanceLimits] = []

    def make(name: str, memory_mb: int = 128, cpus: float | None = None,
             info: LimitsInfo = REAL) -> InstanceLimits:
        lim = InstanceLimits(f"t{os.getpid()}-{name}", ResourceLimits(memory_mb, cpus), info)
        made.append(lim)
        return lim

    yield make
    for lim in made:
        lim.destroy()


# ---------------------------------------------------------------------------- sizing rules


def test_cpu_share_follows_lambda_anchors() -> None:
    assert cpus_for_memory(1769) == 1.0
    assert cpus_for_memory(10240) == 6.0
    assert cpus_for_memory(128) == pytest.approx(128 / 1769)
    assert cpus_for_memory(3008) == pytest.approx(1 + (3008 - 1769) * 5 / (10240 - 1769))
    sizes = list(range(128, 10241, 64))
    shares = [cpus_for_memory(m) for m in sizes]
    assert shares == sorted(shares)  # more memory never means less CPU


def test_threads_cover_the_cpu_share_but_not_more_than_the_machine() -> None:
    usable = len(os.sched_getaffinity(0))
    assert ResourceLimits.for_memory(128).threads == 1
    assert ResourceLimits.for_memory(1769).threads == 1  # exactly 1.0 vCPU is one thread
    assert ResourceLimits.for_memory(1770).threads == min(2, usable)
    assert ResourceLimits.for_memory(10240).threads == min(6, usable)
    assert ResourceLimits(512, cpus=2.5).threads == min(3, usable)


@pytest.mark.parametrize("bad", [127, 10241, 0, -1, 512.0, True])
def test_memory_size_outside_lambda_range_is_a_config_error(bad: object) -> None:
    with pytest.raises(ConfigError, match="memory_mb"):
        ResourceLimits.for_memory(bad)  # type: ignore[arg-type]


def test_explicit_cpus_override_and_must_be_positive() -> None:
    assert ResourceLimits(512, 2).cpus == 2.0
    with pytest.raises(ConfigError, match="cpus"):
        ResourceLimits(512, 0)


@pytest.mark.parametrize("bad", ["../etc", "a/b", "", ".."])
def test_instance_id_must_be_a_safe_name(bad: str) -> None:
    with pytest.raises(InvalidNameError):
        InstanceLimits(bad, ResourceLimits(128), REAL)


# ------------------------------------------------------------------- detect, on fake trees


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def _self(tmp_path: Path, text: str) -> Path:
    return _tree(tmp_path, {"self_cgroup": text}) / "self_cgroup"


V1 = {"memory/memory.limit_in_bytes": "9223372036854771712\n", "memory/cgroup.procs": "1\n",
      "cpu/cpu.cfs_quota_us": "-1\n", "cpu/cgroup.procs": "1\n"}


def test_detect_picks_cgroup2_on_a_pure_v2_root(tmp_path: Path) -> None:
    root = _tree(tmp_path / "cg", {"cgroup.controllers": "cpuset cpu io memory pids\n",
                                   "cgroup.subtree_control": "\n", "cgroup.procs": "1\n"})
    info = detect(root, self_cgroup=_self(tmp_path, "0::/\n"))
    assert (info.mode, info.root) == ("cgroup2", str(root))
    assert "cgroup v2" in info.reason


def test_detect_places_v2_instances_beside_the_platforms_own_cgroup(tmp_path: Path) -> None:
    # The platform lives in app.slice/run.scope, which holds processes: controllers can only be
    # handed down from app.slice, which already gives memory and cpu to its children.
    both = "cpu memory\n"
    root = _tree(tmp_path / "cg", {
        "cgroup.controllers": both, "cgroup.subtree_control": both, "cgroup.procs": "1\n",
        "app.slice/cgroup.type": "domain\n", "app.slice/cgroup.controllers": both,
        "app.slice/cgroup.subtree_control": both, "app.slice/cgroup.procs": "",
        "app.slice/run.scope/cgroup.type": "domain\n", "app.slice/run.scope/cgroup.controllers": both,
        "app.slice/run.scope/cgroup.subtree_control": "", "app.slice/run.scope/cgroup.procs": "42\n"})
    info = detect(root, self_cgroup=_self(tmp_path, "0::/app.slice/run.scope\n"))
    assert info.mode == "cgroup2"
    assert f"at {root / 'app.slice'}" in info.reason


def test_detect_rejects_v2_namespace_root_that_holds_processes(tmp_path: Path) -> None:
    root = _tree(tmp_path / "cg", {"cgroup.type": "domain\n", "cgroup.controllers": "cpu memory\n",
                                   "cgroup.subtree_control": "\n", "cgroup.procs": "1\n7\n"})
    info = detect(root, self_cgroup=_self(tmp_path, "0::/\n"))
    assert info.mode == "rlimit"
    assert "no-internal-process" in info.reason


def test_detect_picks_cgroup1_when_hybrid_v2_has_no_controllers(tmp_path: Path) -> None:
    root = _tree(tmp_path / "cg", {**V1, "unified/cgroup.controllers": "\n",
                                   "cpuacct/cpuacct.usage": "0\n"})
    info = detect(root, self_cgroup=_self(tmp_path, "4:memory:/\n1:cpu:/\n2:cpuacct:/\n0::/\n"))
    assert (info.mode, info.root) == ("cgroup1", str(root))
    assert "unified has no cpu or memory controller" in info.reason
    assert str(root / "cpuacct") in info.reason  # separate cpuacct hierarchy, used for CPU time


def test_detect_nests_v1_instances_inside_the_platforms_own_cgroup(tmp_path: Path) -> None:
    root = _tree(tmp_path / "cg", {**V1, "memory/session/42/cgroup.procs": "9\n",
                                   "cpu/cpuacct.usage": "0\n"})  # cpu,cpuacct co-mounted
    info = detect(root, self_cgroup=_self(tmp_path, "4:memory:/session/42\n1:cpu,cpuacct:/\n"))
    assert info.mode == "cgroup1"
    assert str(root / "memory/session/42") in info.reason
    assert "cpuacct" not in info.reason.split("(instances")[1]  # counted in the cpu cgroup itself


def test_detect_falls_back_to_rlimit_without_cgroups(tmp_path: Path) -> None:
    (tmp_path / "cg").mkdir()
    info = detect(tmp_path / "cg", self_cgroup=_self(tmp_path, ""))
    assert (info.mode, info.root) == ("rlimit", None)
    assert "no cgroup2 mount" in info.reason and "no cgroup v1 memory" in info.reason


def test_detect_needs_both_memory_and_cpu_in_v1(tmp_path: Path) -> None:
    root = _tree(tmp_path / "cg", {"memory/memory.limit_in_bytes": "1\n"})
    info = detect(root, self_cgroup=_self(tmp_path, ""))
    assert info.mode == "rlimit"
    assert "no cgroup v1 cpu hierarchy" in info.reason


def test_detect_prefer_is_obeyed_or_refused(tmp_path: Path) -> None:
    root = _tree(tmp_path / "cg", V1)
    me = _self(tmp_path, "")
    assert detect(root, prefer="rlimit", self_cgroup=me).mode == "rlimit"
    assert detect(root, prefer="cgroup1", self_cgroup=me).mode == "cgroup1"
    with pytest.raises(LimitsError, match=r"cgroup2.*not usable"):
        detect(root, prefer="cgroup2", self_cgroup=me)
    with pytest.raises(ConfigError):
        detect(root, prefer="docker", self_cgroup=me)  # type: ignore[arg-type]


def test_cgroup2_writes_limits_and_reads_usage_from_the_v2_files(tmp_path: Path) -> None:
    """No v2 controllers on this machine: check the files and values against a fake tree."""
    root = tmp_path / "cg"
    inst = root / "servelab" / "fn-1"
    _tree(root, {"cgroup.controllers": "cpu memory\n", "cgroup.subtree_control": "\n",
                 "servelab/cgroup.subtree_control": "\n",
                 **{f"servelab/fn-1/{f}": "" for f in ("cgroup.procs", "memory.max", "memory.swap.max",
                                                       "memory.oom.group", "cpu.max")},
                 "servelab/fn-1/memory.peak": f"{100 << 20}\n", "servelab/fn-1/memory.current": "0\n",
                 "servelab/fn-1/memory.events": "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
                 "servelab/fn-1/cpu.stat": "usage_usec 2500000\nuser_usec 2000000\n"})
    lim = InstanceLimits("fn-1", ResourceLimits(128, 0.5), LimitsInfo("cgroup2", str(root), "fake"))
    assert lim.paths == {"unified": inst}
    lim.create()
    assert (root / "cgroup.subtree_control").read_text().startswith("+memory +cpu")
    assert (root / "servelab/cgroup.subtree_control").read_text().startswith("+memory +cpu")
    assert (inst / "memory.max").read_text() == str(128 << 20)
    assert (inst / "memory.swap.max").read_text() == "0"
    assert (inst / "memory.oom.group").read_text() == "1"
    assert (inst / "cpu.max").read_text() == "50000 100000"
    assert (lim.memory_peak_mb(), lim.memory_current_mb(), lim.cpu_usage_s()) == (100.0, 0.0, 2.5)
    assert lim.oom_killed()


# --------------------------------------------------------------- memory, enforced for real


@needs_cgroup
def test_process_past_128mb_is_oom_killed(make_limits) -> None:
    lim = make_limits("oom")
    lim.create()
    proc = _run(lim, TOUCH, 16, 512)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    touched = int(proc.stdout.split()[-1])
    assert touched < 128  # it never got its 128th MB
    assert lim.oom_killed()
    assert lim.memory_peak_mb() == pytest.approx(128, abs=1)


@needs_cgroup
def test_process_under_the_limit_runs_and_peak_is_what_it_touched(make_limits) -> None:
    lim = make_limits("fits")
    lim.create()
    proc = _run(lim, TOUCH, 16, 64)
    assert proc.returncode == 0, proc.stderr
    assert not lim.oom_killed()
    peak = lim.memory_peak_mb()
    assert peak is not None
    assert 64 <= peak <= 64 + 40  # + the interpreter itself
    current = lim.memory_current_mb()
    assert current is not None and current < 16  # the process is gone: (almost) nothing charged


@needs_cgroup
def test_forked_child_that_enters_is_limited(make_limits) -> None:
    """The fork-server path: enter() right after os.fork() puts the child under the limit."""
    lim = make_limits("forked")
    lim.create()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            lim.enter()
            held = [b"x" * (16 << 20) for _ in range(32)]  # 512 MB
            del held
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    # the kernel may account the kill a moment after the parent reaps the child
    deadline = time.monotonic() + 2.0
    while not lim.oom_killed() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert lim.oom_killed()


# ----------------------------------------------------------------- CPU, enforced for real


@contextlib.contextmanager
def _favoured(lim: InstanceLimits) -> Iterator[None]:
    """Give the instance (and the shared servelab/ group above it) the largest CPU weight for a moment.

    On this shared 2-core machine other sessions' tests can keep both cores busy, and a weight
    of 1024 would leave the spinner a third of a core whatever its quota. With the top weight,
    what is left to hold it back is the quota under test. The group's weight is restored.
    """
    d = lim.paths.get("unified") or lim.paths["cpu"]
    name, top = ("cpu.weight", "10000") if "unified" in lim.paths else ("cpu.shares", "262144")
    group_file = d.parent / name
    before = group_file.read_text().strip()
    group_file.write_text(top)
    (d / name).write_text(top)
    try:
        yield
    finally:
        group_file.write_text(before)


def _cpu_ratio(make_limits, name: str, cpus: float, attempts: int = 3) -> list[float]:
    """CPU seconds per wall second of a spinning child, one per attempt (~1.5 s each).

    The quota can only lower the ratio, and so can other load on this shared machine; so an
    upper bound must hold on every attempt, while a lower bound holds if any attempt reaches it.
    The caller stops early by asserting on what it needs.
    """
    lim = make_limits(name, 1024, cpus)
    lim.create()
    ratios = []
    for _ in range(attempts):
        with _favoured(lim):
            proc = _run(lim, SPIN, 1.5)
        assert proc.returncode == 0, proc.stderr
        cpu_s, wall_s = map(float, proc.stdout.split())
        ratios.append(cpu_s / wall_s)
        usage = lim.cpu_usage_s()
        assert usage is None or usage >= sum(r * 1.5 for r in ratios) * 0.95  # the cgroup counted it
        if ratios[-1] >= (0.35 if cpus < 1 else 0.8):
            break
    return ratios


@needs_cgroup
def test_half_a_vcpu_gets_about_half_a_core(make_limits) -> None:
    ratios = _cpu_ratio(make_limits, "cpu-half", 0.5)
    assert all(r <= 0.65 for r in ratios), ratios
    assert max(ratios) >= 0.35, ratios


@needs_cgroup
def test_one_vcpu_gets_about_one_core(make_limits) -> None:
    ratios = _cpu_ratio(make_limits, "cpu-one", 1.0)
    assert max(ratios) > 0.8, ratios


# ----------------------------------------------------------------- rlimit mode, for real

RLIMIT = LimitsInfo("rlimit", None, "test")

GRAB = textwrap.dedent("""
    import resource
    cap_mb = resource.getrlimit(resource.RLIMIT_AS)[0] / 2**20
    held = []
    try:
        while True:
            held.append(b"x" * (8 << 20))
    except MemoryError:
        got = len(held) * 8
        held.clear()
        print(cap_mb, got, flush=True)
""")


def test_rlimit_turns_overallocation_into_memory_error(make_limits) -> None:
    lim = make_limits("rl-spawn", 128, info=RLIMIT)
    lim.create()  # nothing to create, but callers need not branch on the mode
    proc = _run(lim, GRAB)
    assert proc.returncode == 0, proc.stderr  # caught, and exited cleanly
    cap_mb, got_mb = map(float, proc.stdout.split())
    assert cap_mb == SPAWN_BASELINE_MB + 128 + THREAD_ADDRESS_SPACE_MB
    assert 128 <= got_mb < cap_mb  # it could use its memory size, and was stopped below the cap
    assert lim.memory_peak_mb() is None and not lim.oom_killed() and lim.cpu_usage_s() is None


def test_rlimit_after_fork_caps_what_is_added_to_the_parents_address_space(make_limits) -> None:
    # Forked from a fresh interpreter, not from pytest: a parent full of other tests' threads and
    # freed heap would leave holes in the baseline that the child could legitimately reuse.
    lim = make_limits("rl-fork", 128, info=RLIMIT)
    code = (
        "import json, os, sys\n"
        "from servelab.platform.limits import InstanceLimits\n"
        f"lim = InstanceLimits.from_dict(json.loads({json.dumps(lim.to_dict())!r}))\n"
        "r, w = os.pipe()\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    try:\n"
        "        lim.enter(); held = []\n"
        "        try:\n"
        "            while True: held.append(b'x' * (8 << 20))\n"
        "        except MemoryError:\n"
        "            n = len(held) * 8; held.clear(); os.write(w, str(n).encode())\n"
        "    finally:\n"
        "        os._exit(0)\n"
        "os.close(w)\n"
        "print(os.read(r, 64).decode()); _, st = os.waitpid(pid, 0); sys.exit(os.waitstatus_to_exitcode(st))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    got_mb = int(proc.stdout.strip())
    # the forked child had the parent's mappings already: only memory + thread room is new
    assert 128 - 8 <= got_mb <= 128 + THREAD_ADDRESS_SPACE_MB


def test_rlimit_leaves_room_for_onnxruntime_and_its_errors_are_catchable(
        make_limits, tiny_models: dict[str, Path]) -> None:
    """At 128 MB an instance can import onnxruntime and serve; an oversize batch fails cleanly."""
    lim = make_limits("rl-ort", 128, info=RLIMIT)
    code = textwrap.dedent("""
        import sys
        import numpy as np
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        s = ort.InferenceSession(sys.argv[1], opts, providers=["CPUExecutionProvider"])
        print(s.run(None, {"input": np.ones((2, 16), np.float32)})[0].shape)
        try:  # 128 MB in; the 32-wide hidden layer needs 256 MB
            s.run(None, {"input": np.ones((2_000_000, 16), np.float32)})
            print("no-error")
        except Exception as exc:
            # Which allocation fails first (numpy's input or one of onnxruntime's buffers) and
            # the class onnxruntime raises for it (Fail, RuntimeException, ...) vary by build
            # and memory layout; what matters is that the allocation is refused with a Python
            # exception from numpy or onnxruntime, not a crash.
            origin = "numpy" if isinstance(exc, MemoryError) else type(exc).__module__
            print("refused", "onnxruntime" if "onnxruntime" in origin else origin)
            print(type(exc).__name__, exc, file=sys.stderr)
        print(s.run(None, {"input": np.ones((1, 16), np.float32)})[0].shape)  # still serving
    """)
    proc = _run(lim, code, tiny_models["tiny-mlp"])
    assert proc.returncode == 0, proc.stderr
    words = proc.stdout.split()
    assert words[:2] == ["(2,", "4)"], proc.stdout + proc.stderr
    assert words[2] == "refused" and words[3] in ("numpy", "onnxruntime"), proc.stdout + proc.stderr
    assert words[4:] == ["(1,", "4)"], proc.stdout + proc.stderr


# --------------------------------------------------------------- destroy and cleanup_stale


@needs_cgroup
def test_destroy_kills_what_is_left_and_removes_the_cgroup(make_limits) -> None:
    lim = make_limits("left")
    lim.create()
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                            preexec_fn=lim.preexec_fn())
    try:
        # the same id while it is in use is refused, not shared
        with pytest.raises(LimitsError, match="already has processes"):
            InstanceLimits(lim.instance_id, lim.limits, lim.info).create()
        lim.destroy()
        assert proc.wait(timeout=10) == -signal.SIGKILL
        assert not any(p.exists() for p in lim.paths.values())
        lim.destroy()  # already gone: no error
    finally:
        proc.kill()
        proc.wait()


def _dead_owner_ledger(path: Path) -> InstanceLedger:
    """The ledger of a platform process that has exited (a real pid, now gone)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    start = process_start_ticks(proc.pid)
    proc.wait()
    return InstanceLedger(path, "platform-crashed", pid=proc.pid, start=start)


@needs_cgroup
def test_cleanup_stale_removes_only_what_a_dead_platform_of_this_home_left(make_limits, tmp_path: Path) -> None:
    ledger_path = tmp_path / "instances.ledger"
    dead = dataclasses.replace(REAL, ledger=_dead_owner_ledger(ledger_path))
    alive = dataclasses.replace(REAL, ledger=InstanceLedger(ledger_path, "platform-alive"))
    left = [make_limits(f"stale{i}", info=dead) for i in range(2)]
    live = make_limits("live", info=alive)  # same ledger, but its owner (this process) lives
    unrecorded = make_limits("other")  # another platform's: in no ledger of this home
    procs = []
    for lim in (*left, live, unrecorded):
        lim.create()
        procs.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                                      preexec_fn=lim.preexec_fn()))
    try:
        assert cleanup_stale(REAL, InstanceLedger(ledger_path, "platform-new")) == 2
        assert [p.wait(timeout=10) for p in procs[:2]] == [-signal.SIGKILL] * 2
        assert not any(p.exists() for lim in left for p in lim.paths.values())
        assert procs[2].poll() is None and procs[3].poll() is None  # untouched
        assert all(p.exists() for lim in (live, unrecorded) for p in lim.paths.values())
        # the live owner's entry stays in the ledger; the cleaned ones are gone from it
        assert cleanup_stale(REAL, InstanceLedger(ledger_path, "platform-newer")) == 0
        assert [json.loads(x)["platform"] for x in ledger_path.read_text().splitlines()] == ["platform-alive"]
        live.destroy()  # a clean stop writes "remove": nothing left to clean
        assert cleanup_stale(REAL, InstanceLedger(ledger_path, "platform-last")) == 0
        assert ledger_path.read_text() == ""
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_cleanup_stale_without_a_ledger_touches_nothing() -> None:
    assert cleanup_stale(REAL) == 0


def test_limits_survive_the_trip_to_a_fork_server() -> None:
    lim = InstanceLimits("fn-1", ResourceLimits(512), REAL)
    back = InstanceLimits.from_dict(lim.to_dict())
    assert (back.instance_id, back.limits, back.info) == (lim.instance_id, lim.limits, lim.info)
