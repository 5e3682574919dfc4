"""Assembles minimal root filesystems as tarballs, from what this machine already has.

There may be no image registry, so the images start from `docker import` of a tarball instead of
a pulled base image. Two kinds of tarball:

    rootfs.py base OUT.tar ELF...
        The base image: the dynamic loader and the shared libraries the given ELF binaries link
        (found with ldd), CA certificates, /etc/passwd and /etc/group with a non-root user
        (65532, "nonroot"), /etc/nsswitch.conf and a sticky /tmp. No shell, no package manager.

    rootfs.py python OUT.tar --package NAME... --app FILE...
        A layer with the running interpreter under /opt/python (stdlib without tests, IDLE, Tk,
        ensurepip), the installed distributions that the named packages need (their dependency
        closure, copied from this interpreter's environment) and the libraries all of it links.
        The app files go to /app. Run it with the interpreter whose packages you want: the venv's.

Every entry is owned by root and not writable by others; the images run as uid 65532.
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import io
import os
import pathlib
import re
import subprocess
import sys
import sysconfig
import tarfile

NONROOT = 65532
PASSWD = f"root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:{NONROOT}:{NONROOT}:nonroot:/home/nonroot:/sbin/nologin\n"
GROUP = f"root:x:0:\nnonroot:x:{NONROOT}:\n"
NSSWITCH = "passwd: files\ngroup: files\nhosts: files dns\n"
CA_BUNDLES = ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"]
PYTHON_HOME = "/opt/python"
# Parts of the standard library a server never imports.
STDLIB_SKIP = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "site-packages",
               "pydoc_data", "__phello__", "unittest"}
# Extension modules that would drag in X11 and Tk.
DYNLOAD_SKIP = ("_tkinter",)


class Tree:
    """A tarball being written: parent directories are added once, with sane modes."""

    def __init__(self, path: pathlib.Path):
        self.tar = tarfile.open(path, "w")
        self.seen: set[str] = set()

    def _info(self, name: str, kind, mode: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name.lstrip("/"))
        info.type, info.mode, info.uid, info.gid, info.mtime = kind, mode, 0, 0, 0
        return info

    def dir(self, name: str, mode: int = 0o755, owner: int = 0):
        name = name.rstrip("/")
        if not name or name in self.seen:
            return
        self.dir(os.path.dirname(name))
        self.seen.add(name)
        info = self._info(name, tarfile.DIRTYPE, mode)
        info.uid = info.gid = owner
        self.tar.addfile(info)

    def data(self, name: str, data: bytes, mode: int = 0o644):
        if name in self.seen:
            return
        self.dir(os.path.dirname(name))
        self.seen.add(name)
        info = self._info(name, tarfile.REGTYPE, mode)
        info.size = len(data)
        self.tar.addfile(info, io.BytesIO(data))

    def file(self, name: str, source: str | os.PathLike):
        """Copies a file's content (symlinks followed); executable bits are kept."""
        source = os.path.realpath(source)
        mode = 0o755 if os.stat(source).st_mode & 0o111 else 0o644
        self.data(name, pathlib.Path(source).read_bytes(), mode)

    def close(self):
        self.tar.close()


def is_elf(path: pathlib.Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def linked_libraries(binary: str | os.PathLike) -> list[str] | None:
    """Absolute paths of the loader and libraries `binary` needs; None if one cannot be found."""
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True)
    if out.returncode != 0:
        return []  # statically linked, or not a dynamic object: nothing to add
    libraries = []
    for line in out.stdout.splitlines():
        if "not found" in line:
            return None
        match = re.search(r"(/\S+)\s+\(0x", line)
        if match:
            libraries.append(match.group(1))
    return libraries


def add_libraries(tree: Tree, binaries, relocate: dict[str, str] | None = None):
    """Adds what the binaries link, at the path ldd found it (or its relocated equivalent)."""
    for binary in binaries:
        libraries = linked_libraries(binary)
        if libraries is None:
            sys.exit(f"rootfs: {binary} links a library this machine does not have")
        for library in libraries:
            target = library
            for source_prefix, target_prefix in (relocate or {}).items():
                if library.startswith(source_prefix + "/"):
                    target = target_prefix + library[len(source_prefix):]
            tree.file(target, library)


def base(out: pathlib.Path, binaries: list[str]):
    tree = Tree(out)
    tree.data("/etc/passwd", PASSWD.encode())
    tree.data("/etc/group", GROUP.encode())
    tree.data("/etc/nsswitch.conf", NSSWITCH.encode())
    bundle = next((b for b in CA_BUNDLES if os.path.exists(b)), None)
    if bundle is None:
        sys.exit("rootfs: no CA certificate bundle on this machine (install ca-certificates)")
    tree.file("/etc/ssl/certs/ca-certificates.crt", bundle)
    tree.dir("/tmp", 0o1777)
    tree.dir("/home/nonroot", 0o755, owner=NONROOT)
    add_libraries(tree, binaries)
    tree.close()


def distribution_closure(names: list[str]) -> list[metadata.Distribution]:
    """The installed distributions the named ones need, markers and extras evaluated."""
    from packaging.requirements import Requirement  # ships with pip and pytest's dependencies

    found: dict[str, metadata.Distribution] = {}
    pending = [(name, set()) for name in names]
    while pending:
        name, extras = pending.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        dist = metadata.distribution(name)
        if key in found and not extras:
            continue
        found[key] = dist
        for text in dist.requires or []:
            requirement = Requirement(text)
            environments = [{"extra": extra} for extra in extras] or [{"extra": ""}]
            if requirement.marker and not any(requirement.marker.evaluate(e) for e in environments):
                continue
            pending.append((requirement.name, set(requirement.extras)))
    return list(found.values())


def keep_python_file(relative: pathlib.PurePath) -> bool:
    if "__pycache__" in relative.parts:
        # One bytecode flavour is enough; the optimised ones only double the size.
        return ".opt-" not in relative.name
    return True


def python(out: pathlib.Path, packages: list[str], apps: list[str]):
    tree = Tree(out)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    stdlib = pathlib.Path(sysconfig.get_paths(vars={"installed_base": sys.base_prefix,
                                                    "base": sys.base_prefix})["stdlib"])
    target_lib = f"{PYTHON_HOME}/lib/{version}"
    executable = pathlib.Path(os.path.realpath(sys._base_executable if hasattr(sys, "_base_executable") else sys.executable))
    elves = [executable]
    tree.file(f"{PYTHON_HOME}/bin/python3", executable)
    dynload = pathlib.Path(sysconfig.get_config_var("DESTSHARED") or stdlib / "lib-dynload")
    for path in sorted(stdlib.rglob("*")):
        relative = path.relative_to(stdlib)
        if relative.parts[0] in STDLIB_SKIP or relative.parts[0].startswith("config-"):
            continue
        if path.is_dir() or not keep_python_file(relative):
            continue
        if path.name.startswith(DYNLOAD_SKIP):
            continue
        if is_elf(path):
            if linked_libraries(path) is None:
                print(f"rootfs: leaving out {relative}: it links a library that is not installed",
                      file=sys.stderr)
                continue
            elves.append(path)
        tree.file(f"{target_lib}/{relative}", path)
    if dynload.is_dir() and not str(dynload).startswith(str(stdlib)):
        for path in sorted(dynload.glob("*.so")):
            if not path.name.startswith(DYNLOAD_SKIP) and linked_libraries(path) is not None:
                elves.append(path)
                tree.file(f"{target_lib}/lib-dynload/{path.name}", path)
    site = f"{target_lib}/site-packages"
    for dist in distribution_closure(packages):
        for entry in dist.files or []:
            source = pathlib.Path(dist.locate_file(entry)).resolve()
            relative = pathlib.PurePath(entry)
            if ".." in relative.parts or not source.is_file() or not keep_python_file(relative):
                continue  # console scripts live outside site-packages; the image needs none
            if is_elf(source):
                elves.append(source)
            tree.file(f"{site}/{relative}", source)
    for app in apps:
        tree.file(f"/app/{pathlib.Path(app).name}", app)
    add_libraries(tree, elves, relocate={os.path.realpath(sys.base_prefix): PYTHON_HOME})
    tree.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="kind", required=True)
    b = sub.add_parser("base")
    b.add_argument("out", type=pathlib.Path)
    b.add_argument("binaries", nargs="+")
    p = sub.add_parser("python")
    p.add_argument("out", type=pathlib.Path)
    p.add_argument("--package", action="append", required=True)
    p.add_argument("--app", action="append", default=[])
    args = parser.parse_args()
    if args.kind == "base":
        base(args.out, args.binaries)
    else:
        python(args.out, args.package, args.app)


if __name__ == "__main__":
    main()
