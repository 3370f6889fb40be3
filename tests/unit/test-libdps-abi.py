#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# test-libdps-abi.py: libdps.so exports exactly the functions dps.h declares, all versioned
import os
import re
import subprocess
import sys
import unittest

LIBDPS = sys.argv.pop(1)
SRC = os.environ.get("DPSD_SOURCE_ROOT", os.path.join(os.path.dirname(__file__), "..", ".."))


def header_functions():
    text = open(os.path.join(SRC, "lib", "dps.h")).read()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)          # drop comments
    text = re.sub(r"^\s*#.*$", "", text, flags=re.M)            # and macros
    return set(re.findall(r"\b(dps_[a-z0-9_]+)\s*\(", text))


def script_symbols():
    text = open(os.path.join(SRC, "lib", "libdps.sym")).read()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    glob = re.search(r"global:(.*?)local:", text, flags=re.S).group(1)
    return set(s.strip() for s in glob.split(";") if s.strip())


def exported():
    out = subprocess.run(["nm", "-D", "--defined-only", LIBDPS], capture_output=True, check=True,
                         text=True).stdout
    syms = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3:
            name, _, version = parts[2].partition("@@")
            syms[name] = (parts[1], version)
    return syms


class Abi(unittest.TestCase):
    def test_header_has_functions(self):
        funcs = header_functions()
        for f in ("dps_sas_sign", "dps_topic_parse_response", "dps_backoff_next", "dps_secret_free"):
            self.assertIn(f, funcs)

    def test_version_script_matches_header(self):
        self.assertEqual(script_symbols(), header_functions())

    def test_exports_exactly_the_header(self):
        syms = exported()
        funcs = {n for n, (t, _) in syms.items() if t == "T"}
        self.assertEqual(funcs, header_functions(),
                         "exported functions differ from dps.h (internal helpers must stay hidden)")
        self.assertEqual({n for n in syms if n not in funcs}, {"LIBDPS_0.1"})
        for name in funcs:
            self.assertEqual(syms[name][1], "LIBDPS_0.1", name)

    def test_internal_helpers_hidden(self):
        syms = exported()
        for name in ("dps_base64_decode", "dps_url_encode", "dps_hmac_sha256", "dps_query_get"):
            self.assertNotIn(name, syms)


if __name__ == "__main__":
    unittest.main(verbosity=1)
