# SPDX-License-Identifier: BSD-3-Clause
"""Key slot amend of luks and qcow2+luks interrupted by injected errors:
part 2 of luks-crash.py (see there)."""
import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    "luks_crash", os.path.join(os.path.dirname(os.path.abspath(__file__)), "luks-crash.py"))
luks_crash = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(luks_crash)

if __name__ == "__main__":
    luks_crash.main(luks_crash.amend_cases)
