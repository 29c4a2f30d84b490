"""Reads /proc and the open-file limit for the benchmark, printing JSON.

Why Python, not TypeScript: Deno reads /proc only under --allow-all, which
a benchmark should not need, and it cannot read or set resource limits; a
small python3 process per sample can do both with nothing granted.

    python3 bench/proc.py tree PID   the memory of PID and its descendants
    python3 bench/proc.py limit      the open-file limit (soft, hard) inherited
    python3 bench/proc.py raise N    raises the caller's soft open-file limit
                                     to N (at most the hard one: no privilege)

A tree's memory is the sum of each process's PSS (/proc/PID/smaps_rollup,
where pages shared between processes are split between them) or, where
that file does not exist, its RSS (/proc/PID/status). A PID that is gone
prints null.
"""

import json
import os
import resource
import sys


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def field(text, name):
    for line in (text or "").splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return None


def descendants(pid):
    pids = [pid]
    for p in pids:
        try:
            tasks = os.listdir("/proc/%d/task" % p)
        except OSError:
            tasks = []
        for t in tasks:
            children = read("/proc/%d/task/%s/children" % (p, t)) or ""
            for c in children.split():
                if int(c) not in pids:
                    pids.append(int(c))
    return pids


def tree(pid):
    if read("/proc/%d/status" % pid) is None:
        return None
    pids = descendants(pid)
    kb, measure = 0, "PSS"
    for p in pids:
        pss = field(read("/proc/%d/smaps_rollup" % p), "Pss")
        if pss is None:
            pss = field(read("/proc/%d/status" % p), "VmRSS") or 0
            measure = "RSS"
        kb += pss
    return {"kb": kb, "measure": measure, "processes": len(pids)}


def raise_limit(needed):
    parent = os.getppid()
    soft, hard = resource.prlimit(parent, resource.RLIMIT_NOFILE)
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if target > soft:
        resource.prlimit(parent, resource.RLIMIT_NOFILE, (target, hard))
    return resource.prlimit(parent, resource.RLIMIT_NOFILE)


what = sys.argv[1]
if what == "tree":
    print(json.dumps(tree(int(sys.argv[2]))))
elif what == "limit":
    print(json.dumps(resource.getrlimit(resource.RLIMIT_NOFILE)))
elif what == "raise":
    print(json.dumps(raise_limit(int(sys.argv[2]))))
else:
    sys.exit("usage: proc.py tree PID | limit | raise N")
