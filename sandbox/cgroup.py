"""A `pids` cgroup per run: the process limit that holds (RLIMIT_NPROC does not, for root
or for a user namespace root made), and the handle that finds every process of a run.

Both cgroup versions:
- v1: the `pids` hierarchy (e.g. /sys/fs/cgroup/pids). Runs get
  <hierarchy>/<this process's pids cgroup>/longform-sandbox/run-<pid>-<n>.
- v2: the unified hierarchy, when it offers the `pids` controller. Runs get
  <mount>/<this process's cgroup>/longform-sandbox/run-<pid>-<n>; the `pids` controller
  must be enabled for children of this process's cgroup (v2 forbids that in a cgroup that
  holds processes, the root excepted: point SANDBOX_CGROUP at a delegated cgroup then).
An explicit parent directory (SANDBOX_CGROUP) replaces the automatic choice.

A run's cgroup is made before its process starts, and the runner moves the sandbox's
processes into it before anything of the run starts (sandbox.runner), so every later process
is inside. At the end the
processes still there are killed (`cgroup.kill` on v2, SIGKILL to each pid otherwise) and
the directory is removed. Directories left by a process that died (run-<its pid>-...) are
swept the next time a parent is prepared.
"""
from __future__ import annotations

import asyncio
import itertools
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

SUBDIR = "longform-sandbox"
_counter = itertools.count(1)


class CgroupUnavailable(Exception):
    """No pids cgroup can be made here; the message says why and what to do."""


@dataclass(frozen=True)
class CgroupParent:
    version: int  # 1 or 2
    path: Path  # run cgroups are made directly under it

    def describe(self) -> str:
        return f"cgroup v{self.version} pids at {self.path}"


def _mounts(mountinfo: Path) -> list[tuple[str, str, str, set[str]]]:
    """(root, mount point, fs type, super options) of each cgroup mount."""
    found = []
    for line in mountinfo.read_text().splitlines():
        before, _, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if len(fields) >= 5 and len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2"):
            found.append((fields[3], _unescape(fields[4]), tail[0], set(tail[2].split(","))))
    return found


def _unescape(path: str) -> str:
    return path.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def _own_paths(proc_cgroup: Path) -> dict[str, str]:
    """This process's cgroup path per v1 controller, and under "" its v2 path."""
    paths = {}
    for line in proc_cgroup.read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    return paths


def _below(mount_point: str, mount_root: str, own: str) -> Path:
    """The directory of cgroup `own` in a hierarchy mounted at `mount_point` (whose root is
    `mount_root`: a container may see only a subtree)."""
    if mount_root != "/" and (own == mount_root or own.startswith(mount_root + "/")):
        own = own[len(mount_root):]
    return Path(mount_point) / own.lstrip("/")


def _controllers(path: Path, name: str) -> set[str]:
    try:
        return set((path / name).read_text().split())
    except OSError:
        return set()


def _enable_pids_v2(path: Path) -> None:
    if "pids" in _controllers(path, "cgroup.subtree_control"):
        return
    try:
        (path / "cgroup.subtree_control").write_text("+pids")
    except OSError as exc:
        raise CgroupUnavailable(
            f"cannot enable the pids controller for the children of {path} ({exc.strerror}); cgroup v2 "
            "allows that only in a cgroup without processes: set SANDBOX_CGROUP to a delegated, empty cgroup "
            "(e.g. a systemd unit with Delegate=yes)") from None


def find_parent(configured: str = "", *, mountinfo: Path = Path("/proc/self/mountinfo"),
                proc_cgroup: Path = Path("/proc/self/cgroup")) -> CgroupParent:
    """Where this process makes its runs' pids cgroups (created if needed), or CgroupUnavailable."""
    if configured:
        path = Path(configured)
        if not path.is_dir():
            raise CgroupUnavailable(f"SANDBOX_CGROUP {path} is not a directory")
        if (path / "cgroup.controllers").exists():
            if "pids" not in _controllers(path, "cgroup.controllers"):
                raise CgroupUnavailable(f"the pids controller is not available in {path} (cgroup v2)")
            _enable_pids_v2(path)
            parent = CgroupParent(2, path)
        elif _in_v1_pids(path, mountinfo):
            parent = CgroupParent(1, path)
        else:
            raise CgroupUnavailable(f"SANDBOX_CGROUP {path} is neither a cgroup v2 directory "
                                    "nor in a cgroup v1 pids hierarchy")
        return _checked(parent)
    try:
        mounts, own = _mounts(mountinfo), _own_paths(proc_cgroup)
    except OSError as exc:
        raise CgroupUnavailable(f"cannot read this process's cgroups: {exc}") from None
    reasons = []
    for root, point, fstype, options in mounts:
        if fstype == "cgroup" and "pids" in options and "pids" in own:
            base = _below(point, root, own["pids"])
            try:
                (base / SUBDIR).mkdir(exist_ok=True)
            except OSError as exc:
                reasons.append(f"cgroup v1 pids at {base}: {exc.strerror}")
                continue
            return _checked(CgroupParent(1, base / SUBDIR))
    for root, point, fstype, _ in mounts:
        if fstype == "cgroup2" and "" in own:
            base = _below(point, root, own[""])
            if "pids" not in _controllers(base, "cgroup.controllers"):
                reasons.append(f"cgroup v2 at {point} has no pids controller")
                continue
            try:
                _enable_pids_v2(base)
                (base / SUBDIR).mkdir(exist_ok=True)
                _enable_pids_v2(base / SUBDIR)
            except (CgroupUnavailable, OSError) as exc:
                reasons.append(str(exc))
                continue
            return _checked(CgroupParent(2, base / SUBDIR))
    detail = "; ".join(reasons) if reasons else "no cgroup v1 pids hierarchy and no cgroup v2 mount found"
    raise CgroupUnavailable(f"no usable pids cgroup: {detail}")


def _in_v1_pids(path: Path, mountinfo: Path) -> bool:
    try:
        mounts = _mounts(mountinfo)
    except OSError:
        return False
    real = os.path.realpath(path)
    return any(fstype == "cgroup" and "pids" in options and (real == point or real.startswith(point.rstrip("/") + "/"))
               for _, point, fstype, options in mounts)


def _checked(parent: CgroupParent) -> CgroupParent:
    """Make and remove a probe run cgroup (proves we may), and sweep runs of dead processes."""
    sweep_stale(parent)
    probe = RunCgroup.create(parent, 1)
    probe.remove_now()
    return parent


def sweep_stale(parent: CgroupParent) -> None:
    for entry in parent.path.glob("run-*-*"):
        try:
            owner = int(entry.name.split("-")[1])
        except ValueError:
            continue
        if owner == os.getpid() or _alive(owner):
            continue
        stale = RunCgroup(parent, entry)
        stale.kill()
        stale.remove_now()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunCgroup:
    """One run's cgroup."""

    def __init__(self, parent: CgroupParent, path: Path):
        self.parent, self.path = parent, path

    @classmethod
    def create(cls, parent: CgroupParent, max_processes: int) -> "RunCgroup":
        path = parent.path / f"run-{os.getpid()}-{next(_counter)}"
        try:
            path.mkdir()
            (path / "pids.max").write_text(str(max_processes))
        except OSError as exc:
            cgroup = cls(parent, path)
            cgroup.remove_now()
            raise CgroupUnavailable(f"cannot make a pids cgroup under {parent.path}: {exc.strerror}") from None
        return cls(parent, path)

    @property
    def procs_file(self) -> Path:
        return self.path / "cgroup.procs"

    def join(self, pid: int) -> None:
        """Move process `pid` (all its threads) into this cgroup; its later children start here."""
        with open(self.procs_file, "w") as handle:
            handle.write(str(pid))

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in self.procs_file.read_text().split()]
        except (OSError, ValueError):
            return []

    def _read_int(self, name: str, key: str | None = None) -> int | None:
        try:
            text = (self.path / name).read_text()
        except OSError:
            return None
        if key is None:
            return int(text.strip()) if text.strip().isdigit() else None
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == key and parts[1].isdigit():
                return int(parts[1])
        return None

    def limit_hits(self) -> int:
        """How many forks the pids limit refused."""
        return self._read_int("pids.events", "max") or 0

    def peak(self) -> int | None:
        return self._read_int("pids.peak")

    def kill(self) -> int:
        """SIGKILL every process in the cgroup until it is empty (or 2 s pass); returns how
        many processes were found."""
        killed = 0
        if self.parent.version == 2:
            try:
                (self.path / "cgroup.kill").write_text("1")
            except OSError:
                pass  # before Linux 5.14: the loop below
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            pids = self.pids()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
                except ProcessLookupError:
                    pass
            time.sleep(0.002)
        return killed

    def remove_now(self) -> bool:
        try:
            self.path.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError:
            return False

    async def remove(self, timeout: float = 2.0) -> bool:
        """Remove the directory once its processes are gone (exit is asynchronous)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.remove_now():
                return True
            if time.monotonic() >= deadline:
                return False
            if self.pids():
                self.kill()
            await asyncio.sleep(0.005)
