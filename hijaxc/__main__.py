"""``python -m hijaxc show [--diff] path/to/file.py:qualname`` — print the code hijaxc generates
(``--diff``: as a unified diff from your source); highlighted when writing to a terminal."""
import argparse
import importlib.util
import os
import sys

from .api import JitFunction, show


def _load(path):
    path = os.path.abspath(path)
    sys.path.insert(0, os.path.dirname(path))
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m hijaxc")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("show", help="print the generated code of a function")
    s.add_argument("target", help="path/to/file.py:qualname")
    s.add_argument("--diff", action="store_true",
                   help="a unified diff from your source to the generated body")
    a = p.parse_args(argv)
    path, _, qualname = a.target.rpartition(":")
    if not path or not qualname:
        p.error("target must look like path/to/file.py:qualname")
    obj = _load(path)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if isinstance(obj, JitFunction) or callable(obj):
        from .diff import write

        write(show(obj, diff=a.diff), sys.stdout, "diff" if a.diff else "python")
    return 0


if __name__ == "__main__":
    sys.exit(main())
