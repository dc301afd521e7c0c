"""The bench's CPU by process: the worker's children are told apart by name, and the shares are
computed over the run: processes present at both readings, and those created during it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import namedtuple

from app.bench_pipeline import _busy_share, _role_percent, _steal_share, cpu_by_process

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


def test_role_shares_are_percent_of_one_core_over_the_run() -> None:
    before = {
        1: ("worker", 10.0, 50.0), 2: ("fs-scoring", 5.0, 51.0), 3: ("postgresql", 1.0, 40.0),
        4: ("postgresql", 2.0, 40.0), 6: ("kafka", 3.0, 30.0),
    }  # fmt: skip
    after = {
        1: ("worker", 16.0, 50.0), 2: ("fs-scoring", 7.0, 51.0), 3: ("postgresql", 2.0, 40.0),  # 4 exited
        5: ("postgresql", 3.0, 105.0),  # created during the run (at 100): all of its CPU counts
        6: ("postgresql", 4.0, 104.0),  # pid 6 reused during the run: a new process, counted from 0
        7: ("postgresql", 9.0, 90.0),  # created before the run, missed by the first reading: unknown
    }  # fmt: skip
    shares = _role_percent(before, after, elapsed=10.0, since=100.0)
    assert shares == {"postgresql": 80.0, "worker": 60.0, "fs-scoring": 20.0}
    assert list(shares) == ["postgresql", "worker", "fs-scoring"]  # the busiest first


def test_cpu_readings_grow_with_work() -> None:
    first = cpu_by_process([])[os.getpid()][1]
    end = time.process_time() + 0.05
    while time.process_time() < end:
        pass
    assert cpu_by_process([])[os.getpid()][1] >= first + 0.04


def test_steal_is_the_share_of_all_cores_time_the_hypervisor_took() -> None:
    times = namedtuple("times", "user system idle iowait steal")
    before, after = times(10.0, 2.0, 80.0, 0.0, 8.0), times(40.0, 7.0, 130.0, 1.0, 22.0)
    assert _steal_share(before, after) == 14.0  # 14 of the 100 s that passed on all cores
    assert _busy_share(before, after) == 49.0  # stolen time counts as busy: the VM wanted to run
    assert _steal_share(before, before) == 0.0
