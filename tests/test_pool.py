"""The process pool (base/pool.py): real child processes, real limits, real crashes, and a real
Celery prefork worker using it. The functions the children run are in tests/pool_tasks.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from base.pool import ChildCrashed, PoolError, ProcessPool, TaskFailed, TaskOutOfMemory, TaskTimedOut
from tests import pool_tasks
from tests.test_worker_processes import env, processes, stop, wait_for  # noqa: F401 - fixtures
from utils.errors import ItemError, ItemTooLarge

ROOT = Path(__file__).resolve().parents[1]


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[1])


def gone_within(pids: list[int], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(alive(pid) for pid in pids):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def pool() -> Iterator[ProcessPool]:
    with ProcessPool(size=2, seconds=10, memory_mb=512) as created:
        yield created


def test_a_task_runs_in_a_child_that_is_kept_for_the_next_one(pool: ProcessPool) -> None:
    first = pool.run(pool_tasks.child_pid, None)
    assert first != os.getpid() and parent_of(first) == os.getpid()
    assert pool.run(pool_tasks.child_pid, None) == first
    assert pool.run(pool_tasks.length, b"x" * 3_000_000) == 3_000_000
    assert pool.pids == [first]


def test_a_spool_file_path_is_read_by_the_child(pool: ProcessPool, tmp_path: Path) -> None:
    path = tmp_path / "document.bin"
    path.write_bytes(b"%PDF" + bytes(100_000))
    assert pool.run(pool_tasks.read_file_size, str(path)) == 100_004


def test_never_more_children_than_its_size(pool: ProcessPool) -> None:
    seen: list[int] = []
    counted = threading.Lock()

    def work() -> None:
        pool.run(pool_tasks.sleep, 0.3)
        with counted:
            seen.extend(pool.pids)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert 1 <= len(set(seen)) <= 2
    assert len(pool.pids) <= 2


def test_a_task_past_its_time_limit_is_an_item_error_and_its_child_is_replaced(pool: ProcessPool) -> None:
    before = pool.run(pool_tasks.child_pid, None)
    with pytest.raises(TaskTimedOut) as caught:
        pool.run(pool_tasks.spin, None, seconds=0.5)
    assert isinstance(caught.value, ItemError)
    assert "ran longer than its limit of 0.5 s" in str(caught.value) and "tests.pool_tasks.spin" in str(caught.value)
    assert gone_within([before], 5)
    assert pool.run(pool_tasks.child_pid, None) != before


def test_a_task_over_its_memory_limit_is_an_item_error_and_the_next_one_runs(pool: ProcessPool) -> None:
    with pytest.raises(TaskOutOfMemory) as caught:
        pool.run(pool_tasks.allocate, 1024)
    assert isinstance(caught.value, ItemError) and "512 MB" in str(caught.value)
    with pytest.raises(TaskOutOfMemory):
        pool.run(pool_tasks.allocate, 200, memory_mb=128)  # a lower limit for one task
    assert pool.run(pool_tasks.allocate, 200) == 200 * 1024 * 1024


def test_a_child_that_dies_is_an_item_error_for_its_task_only(pool: ProcessPool) -> None:
    with pytest.raises(ChildCrashed, match="SIGSEGV"):
        pool.run(pool_tasks.segfault, None)
    with pytest.raises(ChildCrashed, match="exited with status 3"):
        pool.run(pool_tasks.hard_exit, None)
    assert pool.run(pool_tasks.echo, "next") == "next"


def test_map_yields_each_inputs_value_or_its_own_error_in_order(pool: ProcessPool) -> None:
    outcomes = list(pool.map(pool_tasks.crash_on, [b"a", b"crash", b"b", b"c", b"crash", b"d"]))
    assert [o if isinstance(o, bytes) else type(o) for o in outcomes] == [
        b"a", ChildCrashed, b"b", b"c", ChildCrashed, b"d"]


def test_what_a_task_raises_comes_back_classified(pool: ProcessPool) -> None:
    with pytest.raises(TaskFailed, match=r"^ValueError: cannot read b'x'$") as caught:
        pool.run(pool_tasks.raise_value_error, b"x")
    assert caught.value.type_name == "builtins.ValueError" and isinstance(caught.value, PoolError)
    with pytest.raises(ItemTooLarge, match=r"scan\.tiff is larger than allowed"):
        pool.run(pool_tasks.raise_too_large, "scan.tiff")
    with pytest.raises(TaskFailed, match="pickle"):
        pool.run(pool_tasks.unpicklable_result, None)
    assert pool.run(pool_tasks.echo, 1) == 1


def test_close_ends_idle_and_busy_children(pool: ProcessPool) -> None:
    errors: list[BaseException] = []
    running = threading.Event()

    def busy() -> None:
        running.set()
        try:
            pool.run(pool_tasks.sleep, 30, seconds=60)
        except PoolError as exc:
            errors.append(exc)

    thread = threading.Thread(target=busy)
    thread.start()
    running.wait(5)
    wait_for(lambda: len(pool.pids) == 1, timeout=10, what="the busy child")
    time.sleep(0.3)  # the busy task is sent: the next task needs a second child
    idle = pool.run(pool_tasks.child_pid, None)
    pids = pool.pids
    assert idle in pids
    pool.close(grace=0.5)
    thread.join(10)
    assert gone_within(pids, 5)
    assert len(errors) == 1 and isinstance(errors[0], ChildCrashed)
    with pytest.raises(RuntimeError, match="closed"):
        pool.run(pool_tasks.echo, 1)


def test_children_do_not_outlive_a_parent_that_is_killed(tmp_path: Path) -> None:
    """The parent is SIGKILLed (no close, no atexit): its idle child exits at once, its busy child by
    the alarm of its own time limit (3 s + ALARM_GRACE), though no parent is left to kill it."""
    script = textwrap.dedent("""
        import threading, time
        from base.pool import ProcessPool
        from tests import pool_tasks
        pool = ProcessPool(size=2, seconds=3)
        threading.Thread(target=pool.run, args=(pool_tasks.sleep, 600), daemon=True).start()
        while not pool.pids:
            time.sleep(0.01)
        time.sleep(0.3)  # the long task is sent: the next one needs a second child
        pool.run(pool_tasks.child_pid, None)
        print(" ".join(map(str, pool.pids)), flush=True)
        time.sleep(600)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert parent.stdout is not None
    pids = [int(p) for p in parent.stdout.readline().split()]
    assert len(pids) == 2 and all(alive(p) for p in pids)
    parent.kill()
    parent.wait(10)
    assert gone_within(pids, 12), [p for p in pids if alive(p)]


# -- under a real Celery worker ------------------------------------------------------------------

def start_worker(environ: dict[str, str], start) -> tuple[subprocess.Popen, Path]:
    proc, log = start([sys.executable, "-m", "celery", "-A", "tests.pool_worker_app", "worker", "-P", "prefork",
                           "-c", "1", "--without-mingle", "--without-gossip", "--loglevel=INFO"], environ, "worker")
    wait_for(Path(environ["WORKER_LIVENESS_FILE"]).exists, timeout=40, what="the worker to start", proc=proc, log=log)
    return proc, log


def send(environ: dict[str, str], name: str) -> None:
    import scheduler
    from tests.conftest import make_settings

    settings = make_settings(Path(environ["HUB_OUTBOX_DIR"]).parent, environ["STATE_REDIS_URL"],
                             broker_url=environ["CELERY_BROKER_URL"], result_backend=environ["CELERY_RESULT_BACKEND"],
                             redbeat_redis_url=environ["REDBEAT_REDIS_URL"])
    scheduler.configure(settings)
    scheduler.app.send_task(name)


def recorded(environ: dict[str, str], name: str) -> dict | None:
    raw = redis.Redis.from_url(environ["STATE_REDIS_URL"]).get(f"pool-test:{name}")
    return json.loads(raw) if raw else None


def test_a_prefork_worker_child_uses_the_pool_and_a_crash_is_one_item_error(
        env: dict[str, str], processes, tmp_path: Path) -> None:  # noqa: F811
    proc, log = start_worker(env, processes)
    send(env, "kmrl_test.pool_round_trip")
    seen = wait_for(lambda: recorded(env, "round_trip"), timeout=40, what="the pool task", proc=proc, log=log)
    assert seen["worker_pid"] != proc.pid  # a prefork child: daemonic, yet it has children of its own
    assert seen["crash"].startswith("ChildCrashed: the worker process running tests.pool_tasks.segfault died")
    assert seen["after_crash"] == "still working"
    assert parent_of(seen["pids"][0]) == seen["worker_pid"]
    assert stop(proc) == 0
    assert gone_within([seen["child_pid"], *seen["pids"]], 5)


def test_stopping_the_worker_ends_a_busy_pool_child(env: dict[str, str], processes, tmp_path: Path) -> None:  # noqa: F811
    """SIGTERM to the worker's main process only (not its group): the pool closes with the worker
    (worker_process_shutdown) instead of leaving its busy child to sleep on for a minute."""
    proc, log = start_worker(env, processes)
    send(env, "kmrl_test.pool_busy_child")
    seen = wait_for(lambda: recorded(env, "busy"), timeout=40, what="the busy pool task", proc=proc, log=log)
    children = seen["child_pids"]
    assert children and all(alive(pid) for pid in children)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(40) == 0
    assert gone_within(children, 5), [p for p in children if alive(p)]
