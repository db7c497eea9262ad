"""Fail early, with a plain message, when the Python running `make` is too old."""

import sys

if sys.version_info < (3, 11):  # noqa: UP036 - runs under whatever python3 make finds
    sys.exit(
        f"error: Python 3.11 or newer is needed, found {sys.version.split()[0]}. "
        "Install it, or run make with PYTHON=/path/to/python3.11."
    )
