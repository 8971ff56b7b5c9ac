"""``python -m hijaxc show path/to/file.py:qualname`` — print the code hijaxc generates."""
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
    a = p.parse_args(argv)
    path, _, qualname = a.target.rpartition(":")
    if not path or not qualname:
        p.error("target must look like path/to/file.py:qualname")
    obj = _load(path)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if isinstance(obj, JitFunction) or callable(obj):
        sys.stdout.write(show(obj))
    return 0


if __name__ == "__main__":
    sys.exit(main())
