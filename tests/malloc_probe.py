"""A fresh process's allocation cycles that glibc's own malloc thresholds page-fault on
and gaf's (``gaf.malloc``) do not; shared by tests/core/test_malloc.py and
tests/benchmarks/test_tuned_malloc.py.

:data:`CYCLES` is a Python program (ctypes only, no torch, no gaf) that frees a 20 MiB
block, which glibc had mapped: its mmap threshold rises to 20 MiB and its trim threshold
to 40 MiB. Then it takes three 15 MiB blocks from the heap, writes and frees them, ten
times: 45 MiB free at the top of the heap exceeds 40 MiB, so glibc returns it each time
and the next cycle page-faults every page again. With the thresholds fixed nothing is
returned. It prints ``{"argv": ..., "faults": ...}``, the faults of the ten cycles.
Prefix it with code that tunes the allocator (or run it through a wrapper that does).
"""

import textwrap

CYCLES = textwrap.dedent("""
    import ctypes, json, resource, sys
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    MB = 1 << 20
    def cycle(sizes):
        blocks = [libc.malloc(s) for s in sizes]
        for p, s in zip(blocks, sizes):
            ctypes.memset(p, 1, s)
        for p in blocks:
            libc.free(p)
    cycle([20 * MB])
    cycle([15 * MB] * 3)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        cycle([15 * MB] * 3)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    print(json.dumps({"argv": sys.argv[1:], "faults": faults}))
""")
PAGES = 10 * 45 * (1 << 20) // 4096  # the pages the ten cycles write
