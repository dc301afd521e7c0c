"""The bench's CPU by process: the worker's children are told apart by name, and the shares are
computed over the processes present at both readings."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from app.bench_pipeline import _role_percent, cpu_by_process

NAMED_CHILD = (
    "import sys, time; from app.proc_name import name_process; "
    "print(name_process('fs-scoring'), open('/proc/self/comm').read().strip(), flush=True); time.sleep(30)"
)


def test_a_named_child_of_a_worker_is_counted_under_its_name() -> None:
    with subprocess.Popen([sys.executable, "-c", NAMED_CHILD], stdout=subprocess.PIPE, text=True) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline().split() == ["True", "fs-scoring"]  # what ps and psutil show
            seen = cpu_by_process([os.getpid()])  # this test process plays the worker
            assert seen[child.pid][0] == "fs-scoring"
            assert seen[os.getpid()][0] == "bench"  # the bench's own process is always counted, as itself
        finally:
            child.kill()


def test_role_shares_are_percent_of_one_core_over_processes_seen_twice() -> None:
    before = {1: ("worker", 10.0), 2: ("fs-scoring", 5.0), 3: ("postgresql", 1.0), 4: ("postgresql", 2.0)}
    after = {
        1: ("worker", 16.0), 2: ("fs-scoring", 7.0), 3: ("postgresql", 2.0),  # 4 exited meanwhile
        5: ("postgresql", 9.0),  # started meanwhile: its CPU before the run is unknown, left out
    }  # fmt: skip
    shares = _role_percent(before, after, elapsed=10.0)
    assert shares == {"worker": 60.0, "fs-scoring": 20.0, "postgresql": 10.0}
    assert list(shares) == ["worker", "fs-scoring", "postgresql"]  # the busiest first


def test_cpu_readings_grow_with_work() -> None:
    first = cpu_by_process([])[os.getpid()][1]
    end = time.process_time() + 0.05
    while time.process_time() < end:
        pass
    assert cpu_by_process([])[os.getpid()][1] >= first + 0.04
