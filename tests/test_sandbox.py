"""The code sandbox (sandbox/): an escape suite, each attempt contained and reported while
the event loop keeps serving, plus the sandbox's Python, SANDBOX=unsafe, refusals and /readyz.

Needs bwrap to run here and the sandbox Python (`make setup` builds it); skipped otherwise."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from sandbox import SandboxConfig, SandboxLimits, SandboxUnavailable, check_available, run_python
from sandbox import cgroup as cgroups
from sandbox.runner import _plans

REPO = Path(__file__).resolve().parent.parent
STATUS = asyncio.run(check_available(SandboxConfig()))
pytestmark = pytest.mark.skipif(not STATUS.available, reason=f"no bwrap sandbox here: {STATUS.reason}")

QUICK = SandboxLimits(cpu_seconds=5, wall_seconds=8)


def host_processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def run_cgroups() -> list[Path]:
    """This process's run cgroups still on disk (each run's is removed at its end)."""
    parent = _plans[SandboxConfig()].cgroup
    return sorted(parent.path.glob(f"run-{os.getpid()}-*")) if parent else []


class Ticker:
    """Another task on the event loop: it must keep ticking while a run is in progress."""

    def __init__(self, interval: float = 0.02):
        self.interval, self.ticks = interval, 0

    async def __aenter__(self):
        async def tick():
            while True:
                await asyncio.sleep(self.interval)
                self.ticks += 1

        self.task = asyncio.create_task(tick())
        return self

    async def __aexit__(self, *exc):
        self.task.cancel()


@pytest.fixture
def work_root(tmp_path):
    """Runs make their private directories here, so a test can see them removed."""
    root = tmp_path / "runs"
    root.mkdir()
    return root


# --- the escape suite ---------------------------------------------------------------------

async def test_the_network_is_unreachable():
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    accepted, done = [], threading.Event()
    listener.settimeout(0.05)

    def accept():
        while not done.is_set():
            try:
                accepted.append(listener.accept())
            except socket.timeout:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    code = f"""
import socket
for host, port in [("127.0.0.1", {port}), ("::1", {port}), ("1.1.1.1", 53), ("10.0.0.1", 80)]:
    try:
        socket.create_connection((host, port), timeout=2)
        print("CONNECTED", host)
    except OSError as exc:
        print("refused", host, type(exc).__name__)
try:
    socket.getaddrinfo("pypi.org", 443)
    print("RESOLVED")
except OSError as exc:
    print("no dns", type(exc).__name__)
print(sorted(name for _, name in socket.if_nameindex()))
"""
    async with Ticker() as ticker:
        result = await run_python(code, QUICK)
    done.set()
    thread.join()
    listener.close()
    assert result.ok, result
    assert accepted == []
    assert "CONNECTED" not in result.stdout and "RESOLVED" not in result.stdout
    assert result.stdout.count("refused") == 4 and "no dns" in result.stdout
    assert "['lo']" in result.stdout  # a network namespace of its own: loopback only
    assert ticker.ticks > 0


async def test_secrets_of_the_service_are_out_of_reach(tmp_path, monkeypatch):
    database = tmp_path / "longform.db"
    database.write_text("SECRET-ROWS")
    secret = f"s3cret-{uuid.uuid4().hex}"
    monkeypatch.setenv("LONGFORM_TEST_SECRET", secret)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{database}")
    paths = ["/etc/shadow", "/etc/hostname", "/etc/hosts", str(database), str(tmp_path), str(REPO),
             str(REPO / "pyproject.toml"), "/root", "/home", "/var", "/usr/bin", "/bin/sh",
             "/sys/fs/cgroup", "/proc/1/root/etc/shadow"]
    code = f"""
import json, os
seen = {{}}
for path in {paths!r}:
    try:
        with open(path, "rb") as handle:
            seen[path] = "READ " + handle.read(20).decode("latin-1")
    except IsADirectoryError:
        seen[path] = "DIR " + ",".join(os.listdir(path)[:5])
    except OSError as exc:
        seen[path] = type(exc).__name__
environ = dict(os.environ)
procs = {{pid: open(f"/proc/{{pid}}/environ", "rb").read().decode("latin-1")
          for pid in os.listdir("/proc") if pid.isdigit()}}
print(json.dumps({{"seen": seen, "environ": environ, "procs": procs, "etc": sorted(os.listdir("/etc"))}}))
"""
    result = await run_python(code, QUICK)
    assert result.ok, result
    report = json.loads(result.stdout)
    assert all(not outcome.startswith(("READ", "DIR")) for outcome in report["seen"].values()), report["seen"]
    assert secret not in result.stdout and "SECRET-ROWS" not in result.stdout
    assert "LONGFORM_TEST_SECRET" not in report["environ"] and "DATABASE_URL" not in report["environ"]
    assert set(report["environ"]) <= {"PATH", "HOME", "TMPDIR", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE",
                                      "LD_LIBRARY_PATH", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                      "MKL_NUM_THREADS", "PWD"}
    assert all("LONGFORM" not in env and "DATABASE_URL" not in env for env in report["procs"].values())
    assert report["etc"] == ["group", "passwd"]


async def test_writes_outside_the_work_directory_fail(work_root, tmp_path):
    targets = ["/python/lib/evil.py", "/usr/lib/evil", "/etc/passwd", "/evil", "/proc/evil", "/dev/evil",
               str(tmp_path / "evil"), str(REPO / "evil")]
    code = f"""
import os
for path in {targets!r}:
    try:
        with open(path, "a") as handle:
            handle.write("x")
        print("WROTE", path)
    except OSError as exc:
        print("denied", path, type(exc).__name__)
for path in ["/work/ok", "/tmp/ok", "/dev/shm/ok", "ok2"]:
    with open(path, "w") as handle:
        handle.write("fine")
print(sorted(os.listdir("/work")), os.getcwd(), os.getuid())
"""
    result = await run_python(code, QUICK, config=SandboxConfig(work_root=str(work_root)))
    assert result.ok, result
    assert "WROTE" not in result.stdout and result.stdout.count("denied") == len(targets)
    assert "['main.py', 'ok', 'ok2'] /work 65534" in result.stdout
    assert not (tmp_path / "evil").exists() and not (REPO / "evil").exists()
    assert list(work_root.iterdir()) == []  # the private directory is gone


async def test_a_fork_bomb_is_held_by_the_process_limit():
    code = """
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
"""
    limits = SandboxLimits(cpu_seconds=10, wall_seconds=2, max_processes=16)
    async with Ticker() as ticker:
        started = time.monotonic()
        result = await run_python(code, limits)
        elapsed = time.monotonic() - started
    assert result.timed_out and result.killed_reason == "wall_clock", result
    assert result.process_limit_hit and result.peak_processes <= 16
    assert elapsed < 6
    assert ticker.ticks >= 30  # the loop kept serving during the run
    assert run_cgroups() == []  # removed, which the kernel allows only once no process is left in it
    assert (await run_python("print('next')", QUICK)).stdout == "next\n"  # and serves the next run


async def test_threads_count_against_the_process_limit():
    code = """
import threading, time
started = 0
try:
    for _ in range(100):
        threading.Thread(target=time.sleep, args=(2,), daemon=True).start()
        started += 1
except RuntimeError as exc:
    print("refused after", started, exc)
"""
    result = await run_python(code, SandboxLimits(max_processes=16, wall_seconds=8))
    assert "refused after" in result.stdout and result.process_limit_hit, result
    assert int(result.stdout.split()[2]) < 16


async def test_a_memory_bomb_hits_the_address_space_limit():
    code = """
blocks = []
while True:
    blocks.append(bytearray(16 * 1024 * 1024))
"""
    result = await run_python(code, SandboxLimits(address_space_mb=256, wall_seconds=8))
    assert result.killed_reason == "memory" and result.exit_code == 1, result
    assert "MemoryError" in result.stderr and result.wall_ms < 5000


async def test_a_numpy_memory_bomb_is_reported_as_memory():
    result = await run_python("import numpy\nnumpy.ones(10**10)", SandboxLimits(address_space_mb=512, wall_seconds=8))
    assert result.killed_reason == "memory" and "Unable to allocate" in result.stderr, result


async def test_an_infinite_loop_is_stopped_by_the_cpu_limit():
    result = await run_python("while True:\n    pass", SandboxLimits(cpu_seconds=1, wall_seconds=10))
    assert result.killed_reason == "cpu" and result.signal == signal.SIGXCPU, result
    assert not result.timed_out and result.wall_ms < 6000


async def test_an_ignored_cpu_signal_ends_in_a_kill():
    code = "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True:\n    pass"
    result = await run_python(code, SandboxLimits(cpu_seconds=1, wall_seconds=10))
    assert result.killed_reason == "cpu" and result.signal == signal.SIGKILL, result


async def test_a_sleep_past_the_wall_clock_is_killed():
    async with Ticker() as ticker:
        result = await run_python("import time\nprint('start', flush=True)\ntime.sleep(60)",
                                  SandboxLimits(wall_seconds=1))
    assert result.timed_out and result.killed_reason == "wall_clock" and result.signal == signal.SIGKILL, result
    assert result.stdout == "start\n"  # what came before the kill is kept
    assert 1000 <= result.wall_ms < 3000
    assert ticker.ticks >= 25


async def test_huge_output_is_capped_and_the_run_ended():
    code = "import sys\nwhile True:\n    sys.stdout.write('x' * 100000)"
    result = await run_python(code, SandboxLimits(output_bytes=5000, wall_seconds=10))
    assert result.stdout == "x" * 5000 and result.stdout_truncated and not result.stderr_truncated, result
    assert result.killed_reason == "output_cap" and not result.timed_out and result.wall_ms < 5000
    result = await run_python("import sys\nsys.stderr.write('e' * 10**6)\nprint('done')",
                              SandboxLimits(output_bytes=1000, wall_seconds=10))
    assert len(result.stderr) == 1000 and result.stderr_truncated and result.killed_reason == "output_cap"


async def test_a_big_file_is_refused():
    code = """
try:
    with open("big", "wb") as handle:
        handle.write(b"x" * (3 * 1024 * 1024))
except OSError as exc:
    print("refused", exc.errno)
"""
    result = await run_python(code, SandboxLimits(file_size_mb=1, wall_seconds=8))
    assert "refused 27" in result.stdout, result  # EFBIG


async def test_killing_the_parent_hurts_nobody_outside():
    code = f"""
import os, signal
print("parent", os.getppid(), "self", os.getpid(), flush=True)
for pid in (os.getppid(), 1, {os.getpid()}, {os.getppid()}):
    try:
        os.kill(pid, signal.SIGKILL)
        print("sent", pid, flush=True)
    except OSError as exc:
        print("cannot", pid, type(exc).__name__, flush=True)
print("still here")
"""
    async with Ticker() as ticker:
        result = await run_python(code, QUICK)
    assert "still here" in result.stdout, result
    assert result.stdout.startswith("parent 1 self 2")  # its own PID namespace
    assert ticker.ticks > 0  # and this process lives on
    # "Every process I may signal": inside, that is nobody (init and the caller are exempt).
    result = await run_python("import os, signal\nos.kill(-1, signal.SIGKILL)", QUICK)
    assert "ProcessLookupError" in result.stderr, result
    assert (await run_python("print(1)", QUICK)).stdout == "1\n"


async def test_a_child_left_running_is_killed_at_the_end():
    marker = f"left-behind-{uuid.uuid4().hex}"
    code = f"""
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv("/python/bin/python3", ["python3", "-c", "import time; time.sleep(60)", "{marker}"])
    os._exit(0)
os.wait()
time.sleep(0.3)
print("first process done")
"""
    result = await run_python(code, QUICK)
    assert result.ok and result.stdout == "first process done\n", result
    assert result.wall_ms < 5000
    assert host_processes_with(marker) == []
    assert run_cgroups() == []


async def test_the_loop_keeps_serving_during_runs():
    async with Ticker(0.01) as ticker:
        results = await asyncio.gather(*(run_python("import time\ntime.sleep(1)\nprint('slept')", QUICK)
                                         for _ in range(3)))
    assert [r.stdout for r in results] == ["slept\n"] * 3
    assert ticker.ticks >= 50


def test_runs_on_the_workers_event_loop():
    from workers.runtime import new_event_loop

    loop = new_event_loop()  # uvloop where installed, as the workers use
    try:
        result = loop.run_until_complete(run_python("print(input()[::-1])", QUICK, stdin="olleh\n"))
        timed = loop.run_until_complete(run_python("import time\ntime.sleep(5)", SandboxLimits(wall_seconds=0.5)))
    finally:
        loop.close()
    assert result.ok and result.stdout == "hello\n", result
    assert timed.timed_out and timed.wall_ms < 2500


# --- what a run can do ----------------------------------------------------------------------

async def test_numpy_and_sympy_work_inside():
    code = """
import numpy, sympy
x = sympy.symbols("x")
print(numpy.linalg.solve(numpy.array([[2.0, 1.0], [1.0, 3.0]]), numpy.array([3.0, 5.0])).round(3).tolist())
print(sympy.factor(x**2 - 1), sympy.isprime(2**61 - 1))
"""
    result = await run_python(code, SandboxLimits(wall_seconds=20, cpu_seconds=15))
    assert result.ok, result
    assert result.stdout == "[0.8, 1.4]\n(x - 1)*(x + 1) True\n"


async def test_the_work_directory_is_writable_and_stdin_is_passed():
    code = """
import sys, tempfile
with open("data.txt", "w") as handle:
    handle.write(sys.stdin.read().upper())
with tempfile.NamedTemporaryFile("w", delete=False) as handle:
    handle.write("t")
print(open("data.txt").read(), handle.name.startswith("/work/"))
"""
    result = await run_python(code, QUICK, stdin="numbers: 1 2 3")
    assert result.ok and result.stdout == "NUMBERS: 1 2 3 True\n", result


async def test_a_failing_script_reports_its_traceback_and_exit_code():
    result = await run_python("import sys\nprint('partial')\nraise ValueError('bad input')", QUICK)
    assert result.exit_code == 1 and result.killed_reason is None and not result.ok
    assert result.stdout == "partial\n" and 'File "/work/main.py", line 3' in result.stderr
    assert "ValueError: bad input" in result.stderr
    result = await run_python("import sys\nsys.exit(3)", QUICK)
    assert result.exit_code == 3 and result.signal is None and result.sandbox == "bwrap"


# --- modes, refusals, status --------------------------------------------------------------

async def test_unsafe_mode_runs_and_says_so(caplog, monkeypatch, work_root):
    monkeypatch.setenv("LONGFORM_TEST_SECRET", "s3cret")
    config = SandboxConfig(mode="unsafe", work_root=str(work_root))
    with caplog.at_level(logging.WARNING, logger="sandbox"):
        result = await run_python("import os\nprint(os.environ.get('LONGFORM_TEST_SECRET'))", QUICK, config=config)
    assert result.ok and result.sandbox == "unsafe" and result.stdout == "None\n", result
    assert any("WITHOUT isolation" in r.getMessage() for r in caplog.records)
    timed = await run_python("import time\ntime.sleep(30)", SandboxLimits(wall_seconds=0.5), config=config)
    assert timed.timed_out and timed.wall_ms < 2500
    status = await check_available(config)
    assert status.available and status.mode == "unsafe" and "WITHOUT isolation" in status.reason
    assert list(work_root.iterdir()) == []


async def test_without_the_sandbox_python_code_is_refused(tmp_path):
    config = SandboxConfig(python_dir=str(tmp_path / "missing"))
    with pytest.raises(SandboxUnavailable, match=r"sandbox Python is missing .*make setup"):
        await run_python("print(1)", QUICK, config=config)
    status = await check_available(config)
    assert not status.available and "make setup" in status.reason


async def test_an_unusable_bwrap_or_cgroup_is_refused(tmp_path):
    with pytest.raises(SandboxUnavailable, match="not an executable"):
        await run_python("print(1)", QUICK, config=SandboxConfig(bwrap=str(tmp_path / "bwrap")))
    with pytest.raises(SandboxUnavailable, match="bwrap exited with 1"):
        await run_python("print(1)", QUICK, config=SandboxConfig(bwrap="/bin/false"))
    with pytest.raises(SandboxUnavailable, match="SANDBOX_ALLOW_WITHOUT_PIDS_CGROUP"):
        await run_python("print(1)", QUICK, config=SandboxConfig(cgroup=str(tmp_path)))
    # Allowed explicitly: it runs, with the weaker limit reported.
    config = SandboxConfig(cgroup=str(tmp_path), allow_without_pids_cgroup=True)
    status = await check_available(config)
    assert status.available and "RLIMIT_NPROC only" in status.details["cgroup"]
    result = await run_python("print('ran')", QUICK, config=config)
    assert result.stdout == "ran\n" and result.peak_processes is None


async def test_a_sandbox_that_cannot_be_confined_never_starts_the_code(monkeypatch):
    from sandbox import runner

    def refuse(*args):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(runner.resource, "prlimit", refuse)
    marker = f"never-ran-{uuid.uuid4().hex}"
    code = f'import os\nos.execv("/python/bin/python3", ["python3", "-c", "import time; time.sleep(30)", "{marker}"])'
    with pytest.raises(SandboxUnavailable, match="cannot confine the sandbox's process"):
        await run_python(code, QUICK)
    assert host_processes_with(marker) == [] and run_cgroups() == []


def test_a_bad_mode_or_limit_is_rejected():
    with pytest.raises(ValueError, match="SANDBOX must be one of"):
        SandboxConfig(mode="docker")
    with pytest.raises(ValueError, match="wall_seconds"):
        SandboxLimits(wall_seconds=0)


def test_settings_build_the_config_and_limits(monkeypatch):
    from agents.settings import Settings

    monkeypatch.setenv("SANDBOX", "unsafe")
    monkeypatch.setenv("SANDBOX_WALL_SECONDS", "3.5")
    settings = Settings.load()
    assert settings.sandbox_config().mode == "unsafe"
    assert settings.sandbox_limits().wall_seconds == 3.5 and settings.sandbox_limits().cpu_seconds == 10
    monkeypatch.setenv("SANDBOX", "nsjail")
    with pytest.raises(ValueError):
        Settings.load()


def test_cgroup_paths_are_found_for_v1_and_v2(tmp_path):
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "30 25 0:26 / /sys/fs/cgroup/pids rw,relatime shared:12 - cgroup cgroup rw,pids\n"
        "31 25 0:27 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
        "32 25 0:28 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n")
    own = tmp_path / "cgroup"
    own.write_text("8:pids:/jobs/a\n4:memory:/docker/abc/x\n0::/system.slice/w.service\n")
    mounts = cgroups._mounts(mountinfo)
    assert [(m[1], m[2], "pids" in m[3]) for m in mounts] == [
        ("/sys/fs/cgroup/pids", "cgroup", True), ("/sys/fs/cgroup/memory", "cgroup", False),
        ("/sys/fs/cgroup/unified", "cgroup2", False)]
    paths = cgroups._own_paths(own)
    assert paths["pids"] == "/jobs/a" and paths[""] == "/system.slice/w.service"
    assert cgroups._below("/sys/fs/cgroup/pids", "/", paths["pids"]) == Path("/sys/fs/cgroup/pids/jobs/a")
    assert cgroups._below("/sys/fs/cgroup/memory", "/docker/abc", "/docker/abc/x") == Path("/sys/fs/cgroup/memory/x")


def test_readyz_reports_the_sandbox(tmp_path, fake_llm):
    from agents.settings import Settings
    from tests.api_server import running_api
    from tests.db_fixtures import sqlite_url

    for mode in ("bwrap", "unsafe"):
        settings = Settings(longform_data_dir=str(tmp_path / mode), database_url=sqlite_url(tmp_path),
                            llm_endpoints=fake_llm.base_url, sandbox=mode, longform_no_worker=True)
        with running_api(settings) as url:
            ready = httpx.get(f"{url}/readyz", timeout=30)
        assert ready.status_code == 200, ready.text
        sandbox = ready.json()["sandbox"]
        assert sandbox["mode"] == mode and sandbox["available"], sandbox
        if mode == "unsafe":
            assert "WITHOUT isolation" in sandbox["reason"]
        else:
            assert sandbox["reason"] == "ok" and sandbox["cgroup"].startswith("cgroup v")
    settings = Settings(longform_data_dir=str(tmp_path / "none"), database_url=sqlite_url(tmp_path),
                        llm_endpoints=fake_llm.base_url, sandbox_python=str(tmp_path / "missing"),
                        longform_no_worker=True)
    with running_api(settings) as url:
        ready = httpx.get(f"{url}/readyz", timeout=30)
    assert ready.status_code == 200  # reported, not required: only code runs need it
    assert ready.json()["sandbox"]["available"] is False and "make setup" in ready.json()["sandbox"]["reason"]
