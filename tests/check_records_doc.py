#!/usr/bin/env python3
"""docs/ARCHITECTURE.md's record table is the schema's: the part between
the two markers must be exactly what `qms_selftest --records-table` prints
from common/qms_msg.c.  With --write, rewrite that part (scripts/gen-docs).

Usage: check_records_doc.py QMS_SELFTEST DOC [--write]
"""
import subprocess
import sys

BEGIN = "<!-- records: generated from common/qms_msg.c by scripts/gen-docs; do not edit -->\n"
END = "<!-- records: end -->\n"


def main():
    selftest, doc = sys.argv[1], sys.argv[2]
    write = "--write" in sys.argv[3:]
    table = subprocess.run([selftest, "--records-table"], check=True, stdout=subprocess.PIPE,
                           text=True).stdout
    if not table.startswith("| # | type |") or table.count("\n") < 10:
        sys.exit("FAIL: %s --records-table printed no table:\n%s" % (selftest, table))
    with open(doc) as f:
        text = f.read()
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        sys.exit("FAIL: %s needs exactly one pair of markers:\n%s%s" % (doc, BEGIN, END))
    head, rest = text.split(BEGIN)
    current, tail = rest.split(END)
    if current == table:
        print("ok: the record table of %s matches the schema (%d types)" % (doc, table.count("\n") - 2))
        return
    if write:
        with open(doc, "w") as f:
            f.write(head + BEGIN + table + END + tail)
        print("rewrote the record table of %s" % doc)
        return
    old, new = current.splitlines(), table.splitlines()
    diff = [l for l in new if l not in old][:5]
    sys.exit("FAIL: the record table of %s is stale; run scripts/gen-docs.\n"
             "rows the schema has that the document lacks:\n%s" % (doc, "\n".join(diff) or "(rows removed)"))


if __name__ == "__main__":
    main()
