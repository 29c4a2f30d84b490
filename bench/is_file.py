"""Exits 0 if its argument is a file, 1 if not: does the reader's BOOK_DIR hold a script?

Why Python, not TypeScript: the benchmark's Deno process may read only the
repository (--allow-read=.), and BOOK_DIR is anywhere; python3, which runs
the book's scripts anyway, can look without the task granting more.

    python3 bench/is_file.py PATH
"""

import os
import sys

sys.exit(0 if os.path.isfile(sys.argv[1]) else 1)
