"""Times Python's own fork() and thread start: the floors of the book's 2_1 and 2_2.

Why Python, not TypeScript: it measures Python itself (what the book's
ForkingMixIn and ThreadingMixIn pay per connection), so Python must time it.

    python3 bench/python_floors.py N   prints "FORK_MS THREAD_MS", each the
                                       median of N starts
"""

import os
import sys
import threading
import time


def median_ms(start, n):
    times = []
    for _ in range(n):
        began = time.perf_counter()
        start()
        times.append(time.perf_counter() - began)
    return sorted(times)[n // 2] * 1000


def fork():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)


def thread():
    t = threading.Thread(target=lambda: None)
    t.start()
    t.join()


n = int(sys.argv[1])
print(median_ms(fork, n), median_ms(thread, n))
