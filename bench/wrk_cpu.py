"""Runs a command (wrk) and, as its last stderr line, the CPU seconds it used.

Why Python, not TypeScript: the kernel counts a finished child's CPU time
(getrusage(RUSAGE_CHILDREN)), which Deno does not expose; this measures wrk's
own user + system time, whatever pins it, rather than sampling it.

    python3 bench/wrk_cpu.py wrk -t1 -c50 ...   prints "cpu-seconds S" on stderr
"""

import resource
import subprocess
import sys

code = subprocess.run(sys.argv[1:]).returncode
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print("cpu-seconds %f" % (usage.ru_utime + usage.ru_stime), file=sys.stderr)
sys.exit(code)
