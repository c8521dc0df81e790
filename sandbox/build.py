"""Build the sandbox's Python: a self-contained, read-only copy of this interpreter with
the standard library plus numpy and sympy, outside the repo and apart from the service's
environment. `make setup` runs it; it is idempotent (a built tree is left alone).

Run: .venv/bin/python -m sandbox.build [DEST] [--force]
DEST defaults to SANDBOX_PYTHON, else ~/.cache/longform/sandbox-python.

The tree (mounted read-only at /python inside the sandbox):
    bin/python3                the interpreter binary (a copy; it finds its prefix from
                               its own location, so the tree works wherever it is mounted)
    lib/libpython3.X.so...     shared libraries it needs that are not system libraries
    lib/python3.X/             the standard library (no tests, no IDLE, no tkinter) and
                               site-packages with numpy and sympy (and sympy's mpmath)
    etc/passwd, etc/group      the sandbox's whole /etc: one user, uid 65534, home /work
    longform-sandbox.json      what was built; its presence means "ready"

The tree is built next to DEST and renamed into place at the end, so a half-built tree
is never used. Packages come from the configured package index (pip's own settings), at
setup time only: the service never downloads anything.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from sandbox.layout import BUILD_FORMAT, MARKER, default_dir, read_marker

PACKAGES = ("numpy>=1.26,<3", "sympy>=1.12,<2")
# Parts of the standard library a sandboxed script has no use for (about 140 MB).
SKIPPED = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "site-packages", "dist-packages",
           "__phello__", "lib2to3", "EXTERNALLY-MANAGED"}
SYSTEM_LIBRARY_DIRS = ("/lib", "/lib64", "/lib32", "/libx32", "/usr/lib", "/usr/lib64", "/usr/lib32")
PASSWD = "sandbox:x:65534:65534:sandbox:/work:/nonexistent\n"
GROUP = "sandbox:x:65534:\n"


def _is_system_library(path: str) -> bool:
    real = os.path.realpath(path)
    return any(real == d or real.startswith(d + "/") for d in map(os.path.realpath, SYSTEM_LIBRARY_DIRS))


def _shared_libraries(files: list[Path]) -> set[str]:
    """Resolved paths of the shared libraries `files` load (ldd), system ones included."""
    found: set[str] = set()
    for file in files:
        result = subprocess.run(["ldd", str(file)], capture_output=True, text=True)
        for line in result.stdout.splitlines():
            parts = line.split("=>")
            if len(parts) == 2:
                target = parts[1].strip().split(" (")[0].strip()
                if target.startswith("/"):
                    found.add(target)
                elif target.startswith("not found"):
                    raise SystemExit(f"{file} needs {parts[0].strip()}, which ldd cannot find")
    return found


def _copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, ignore=lambda d, names: [n for n in names if n in SKIPPED or n.startswith("config-")]
                    if Path(d) == src else [])


def build(dest: Path, packages: tuple[str, ...] = PACKAGES, force: bool = False) -> dict:
    dest = Path(dest).expanduser().resolve()
    existing = read_marker(dest)
    if existing and not force and existing.get("packages") == list(packages):
        print(f"sandbox Python already built at {dest} (Python {existing['python']}); --force rebuilds")
        return existing
    if not sys.platform.startswith("linux"):
        raise SystemExit("the sandbox needs Linux")

    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    executable = Path(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))
    stdlib = Path(sysconfig.get_path("stdlib", vars={"installed_base": sys.base_prefix}))
    dynload = Path(sysconfig.get_config_var("DESTSHARED") or stdlib / "lib-dynload")
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.build-", dir=dest.parent))
    try:
        print(f"building the sandbox Python in {dest} from {executable} (Python {version})")
        (work / "bin").mkdir()
        shutil.copy2(executable, work / "bin" / "python3")
        (work / "bin" / "python").symlink_to("python3")
        libdir = work / "lib" / f"python{version}"
        _copy_tree(stdlib, libdir)
        if not (libdir / "lib-dynload").is_dir():  # Debian and others keep it apart
            shutil.copytree(dynload, libdir / "lib-dynload")
        # Non-system shared libraries (libpython from pyenv or /usr/local) go into lib/.
        for library in sorted(_shared_libraries([executable, *sorted(dynload.glob("*.so"))])):
            if not _is_system_library(library):
                shutil.copy2(library, work / "lib" / Path(library).name)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LD_LIBRARY_PATH": str(work / "lib"), "LANG": "C.UTF-8"}
        python = [str(work / "bin" / "python3"), "-I"]
        site_dir = subprocess.run([*python, "-c", "import site; print(site.getsitepackages()[0])"],
                                  env=env, capture_output=True, text=True, check=True).stdout.strip()
        if not Path(site_dir).resolve().is_relative_to(work.resolve()):
            raise SystemExit(f"the copied interpreter's site-packages {site_dir} is outside {work}")
        Path(site_dir).mkdir(parents=True, exist_ok=True)
        # The service's pip installs for this same interpreter version into the copy's site-packages.
        pip_env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}  # pip's own settings stay
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-input", "--only-binary=:all:",
                        "--no-warn-script-location", "--target", site_dir, *packages], env=pip_env, check=True)
        shutil.rmtree(Path(site_dir) / "bin", ignore_errors=True)  # console scripts with host shebangs
        subprocess.run([*python, "-m", "compileall", "-q", "-j0", str(work / "lib")], env=env,
                       stdout=subprocess.DEVNULL, check=False)
        (work / "etc").mkdir()
        (work / "etc" / "passwd").write_text(PASSWD)
        (work / "etc" / "group").write_text(GROUP)
        probe = subprocess.run([*python, "-c", "import json, numpy, sympy; print(json.dumps("
                                "{'numpy': numpy.__version__, 'sympy': sympy.__version__}))"],
                               env=env, capture_output=True, text=True, check=True)
        marker = {"format": BUILD_FORMAT, "python": sys.version.split()[0], "source": str(executable),
                  "packages": list(packages), "versions": json.loads(probe.stdout)}
        (work / MARKER).write_text(json.dumps(marker, indent=1) + "\n")
        for root, dirs, files in os.walk(work):
            for name in dirs + files:
                path = os.path.join(root, name)
                if not os.path.islink(path):
                    os.chmod(path, os.stat(path).st_mode & 0o755 | 0o444 | (0o111 if os.path.isdir(path) else 0))
        os.chmod(work, 0o755)
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            dest.rename(old)
            shutil.rmtree(old, ignore_errors=True)
        work.rename(dest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    print(f"sandbox Python ready: Python {marker['python']}, numpy {marker['versions']['numpy']}, "
          f"sympy {marker['versions']['sympy']}")
    return marker


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox.build", description=__doc__.split("\n\n")[0])
    parser.add_argument("dest", nargs="?", default=os.environ.get("SANDBOX_PYTHON") or str(default_dir()))
    parser.add_argument("--force", action="store_true", help="rebuild even when a tree is there")
    args = parser.parse_args(argv)
    build(Path(args.dest), force=args.force)


if __name__ == "__main__":
    main()
