#!/usr/bin/env python3
"""The rooms' walls hold: each file in tests/walls/ is compiled with the
include path and links of one room (CMake target wall_<file>); a file that
includes a header of a room its room does not link must fail to compile on
exactly that header, and the control (router_ok) must compile.

Usage: check.py BUILD_DIR CASE:ROOM:HEADER...   (HEADER "-" = must build)
"""
import subprocess
import sys


def build(build_dir, target):
    run = subprocess.run(["cmake", "--build", build_dir, "--target", target],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return run.returncode, run.stdout


def main():
    build_dir, cases = sys.argv[1], sys.argv[2:]
    failures = 0
    for case in cases:
        name, room, header = case.split(":")
        rc, out = build(build_dir, "wall_" + name)
        if header == "-":
            ok = rc == 0
            why = "builds, as it must" if ok else "does not build:\n" + out
        else:
            blocked = ("%s: No such file" % header) in out or ("'%s' file not found" % header) in out
            ok = rc != 0 and blocked
            why = ("%s is out of reach from %s/" % (header, room) if ok else
                   "expected a failure on %s, got rc=%d:\n%s" % (header, rc, out))
        print("%s %s: %s" % ("ok  " if ok else "FAIL", name, why))
        failures += not ok
    if not cases:
        print("FAIL: no cases given")
        failures = 1
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
