"""A fault-tolerant pool of Ray actors: the scheduler of both Ray labeling jobs (images and videos).

Each actor (:class:`PoolWorker`) builds the predictor once from a picklable ``factory``; a job
is a list of :class:`PoolTask` (a chunk of images, or one video), each run by one actor as one
Ray actor task. The driver keeps at most ``DEPTH`` tasks in flight per actor and hands out the
rest as actors free up, so a fast actor takes more work and a lost one takes none.

What happens when a worker process or its node dies (:func:`run_pool`):

- The actor's in-flight tasks fail at once (``max_task_retries=0``: Ray does not retry them
  itself) with ``RayActorError`` / ``ObjectLostError``. Each goes back to the **front of the
  driver's queue** and is given to the next live actor, so a chunk is re-run whole (same images,
  same batch: the same records). Its inputs are counted in ``retried``. A death is counted
  against the task that was running (an actor runs its tasks in the order sent: the oldest in
  flight that had not finished), not those waiting behind it. A task whose worker has died ``1 + max_task_retries``
  times while running it is not tried again: its inputs are reported failed, by name, with the
  reason (a poison input cannot crash the pool forever).
- Ray restarts the actor (``max_restarts`` times; the constructor runs again, a new process,
  on any node with room). The driver pings it and sends it work only once it answers. An actor
  that cannot be placed (its node is gone and no other node has room) is simply not used; the
  job goes on with the others.
- When no actor is alive and none answers for ``worker_timeout_s``, the remaining tasks fail
  by name; when every actor died while starting (a constructor error such as a bad model
  path), :class:`RayWorkerError` is raised with that error.

A result reaches the driver once per successful attempt, and the store is keyed by the input,
so an input is never labeled twice even when a task ran twice.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from grounded_sam.labeling.options import RayOptions
from gsam_runtime.images import MAX_PIXELS_ENV

__all__ = ["PoolTask", "PoolWorker", "RayWorkerError", "run_pool", "import_ray", "init_ray"]

DEPTH = 2  # tasks in flight per actor: the next one is queued while the current one runs


class RayWorkerError(RuntimeError):
    """No Ray worker could start (e.g. the predictor's constructor failed on every actor)."""


@dataclass(frozen=True)
class PoolTask:
    """One unit of work: ``fn(model, context, payload)`` in an actor (``fn`` a top-level function)."""

    names: tuple[str, ...]  # the inputs it covers, as reports name them
    fn: Callable[[Any, Any, Any], Any]
    payload: Any


class PoolWorker:
    """The Ray actor: builds the predictor once, then runs tasks on it."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self.model = factory()

    def ready(self) -> bool:
        return True

    def run(self, fn: Callable[[Any, Any, Any], Any], context: Any, payload: Any) -> Any:
        return fn(self.model, context, payload)


def import_ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise ImportError('the Ray backend needs Ray: pip install ".[ray]" in the project folder') from e
    return ray


def init_ray(ray: Any, address: str | None) -> None:
    """``ray.init`` unless Ray is initialised already; a loopback cluster (or a new local Ray) is
    joined on 127.0.0.1, since Ray would otherwise advertise the machine's interface address."""
    if ray.is_initialized():
        return
    target = address if address is not None else os.environ.get("RAY_ADDRESS")
    host = (target or "").split("://")[-1].rsplit(":", 1)[0]
    loopback = target is None or host in ("127.0.0.1", "localhost")
    ray.init(address=address, **({"_node_ip_address": "127.0.0.1"} if loopback else {}))


@dataclass
class _Actor:
    handle: Any
    state: str = "starting"  # starting -> ok; ok -> suspect (lost a task) -> ok | dead
    load: int = 0
    ever_ready: bool = False
    sent: int = 0  # tasks sent to it so far (their order: an actor runs its tasks one after another)
    blamed: Any = None  # the task that was running when it was last lost


def run_pool(
    ray: Any,
    factory: Callable[[], Any],
    context: Any,
    tasks: Sequence[PoolTask],
    cluster: RayOptions,
    *,
    on_result: Callable[[PoolTask, Any], None],
    on_retry: Callable[[PoolTask, str], None],
    on_fail: Callable[[PoolTask, str], None],
) -> None:
    """Run ``tasks`` on ``cluster.num_workers`` actors (module docs); ``context`` is put in the
    object store once and handed to every task. Callbacks run in this process, one at a time."""
    from ray.exceptions import ActorDiedError, ObjectLostError, RayActorError, RayTaskError

    opts: dict[str, Any] = {"num_cpus": 1.0 if cluster.num_cpus_per_worker is None else cluster.num_cpus_per_worker,
                            "max_restarts": cluster.max_restarts, "max_task_retries": 0}
    if cluster.num_gpus_per_worker:
        opts["num_gpus"] = cluster.num_gpus_per_worker
    if os.environ.get(MAX_PIXELS_ENV):  # --max-pixels reaches workers on other machines too
        opts["runtime_env"] = {"env_vars": {MAX_PIXELS_ENV: os.environ[MAX_PIXELS_ENV]}}
    remote = ray.remote(PoolWorker).options(**opts)
    actors = [_Actor(remote.remote(factory)) for _ in range(min(cluster.num_workers, len(tasks)))]
    pings = {a.handle.ready.remote(): a for a in actors}
    ctx = ray.put(context)
    queue: deque[tuple[PoolTask, int]] = deque((t, 1) for t in tasks)
    running: dict[Any, tuple[_Actor, PoolTask, int, int]] = {}  # ref -> actor, task, attempt, order sent
    last_error, idle_since = "", time.monotonic()
    try:
        while queue or running:
            for a in actors:
                while a.state == "ok" and a.load < DEPTH and queue:
                    task, attempt = queue.popleft()
                    running[a.handle.run.remote(task.fn, ctx, task.payload)] = (a, task, attempt, a.sent)
                    a.load, a.sent = a.load + 1, a.sent + 1
            if running:
                idle_since = time.monotonic()
            elif all(a.state == "dead" for a in actors):
                if not any(a.ever_ready for a in actors):
                    raise RayWorkerError(f"no Ray worker could start: {last_error}")
                _fail_all(queue, on_fail, f"every Ray worker died (last: {last_error})")
                break
            elif time.monotonic() - idle_since > cluster.worker_timeout_s:
                _fail_all(queue, on_fail, f"no live Ray worker for {cluster.worker_timeout_s:g} s "
                                          f"(last error: {last_error or 'none'})")
                break
            ready, _ = ray.wait([*running, *pings], num_returns=1, timeout=1.0)
            for ref in ready:
                if ref in pings:
                    a = pings.pop(ref)
                    try:
                        ray.get(ref)
                        a.state, a.ever_ready = "ok", True
                    except ActorDiedError as e:  # restarts used up, or its constructor raised
                        a.state, last_error = "dead", _why(e)
                    except RayActorError:  # unreachable for now (restarting): ask again
                        pings[a.handle.ready.remote()] = a
                    continue
                a, task, attempt, order = running.pop(ref)
                a.load -= 1
                try:
                    result = ray.get(ref)
                except (RayActorError, ObjectLostError) as e:  # the worker (or its node) was lost
                    last_error = _why(e)
                    if a.state == "ok":  # first news of this loss: its oldest task was the one running
                        a.state = "suspect"
                        pings[a.handle.ready.remote()] = a
                        a.blamed = _running_when_lost(ray, [(order, ref), *((o, r) for r, (b, _, _, o) in running.items()
                                                                              if b is a)])
                    if ref != a.blamed:  # only waiting behind it: re-run, no death counted against it
                        queue.appendleft((task, attempt))
                        on_retry(task, last_error)
                    elif attempt > cluster.max_task_retries:
                        on_fail(task, f"its Ray worker died {attempt} times while on it (last: {last_error})")
                    else:
                        queue.appendleft((task, attempt + 1))
                        on_retry(task, last_error)
                except RayTaskError as e:  # an error our task code did not catch: report, go on
                    on_fail(task, f"Ray worker error: {_why(e)}")
                else:
                    on_result(task, result)
    finally:
        for a in actors:
            try:
                ray.kill(a.handle)
            except Exception:  # noqa: BLE001 - already gone
                pass


def _running_when_lost(ray: Any, in_flight: list[tuple[int, Any]]) -> Any:
    """The ref of the task an actor was running when it was lost: the oldest sent (``(order, ref)``
    pairs) that did not finish. A task that finished before the loss may still be waiting for the driver
    to collect its result; it is passed over, or the next task's death would be blamed on it."""
    from ray.exceptions import ObjectLostError, RayActorError

    refs = [ref for _, ref in in_flight]
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
    finished = set()
    for ref in ready:
        try:
            ray.get(ref, timeout=0)
        except (RayActorError, ObjectLostError):  # lost with the actor
            continue
        except Exception:  # noqa: BLE001, S112 - the task's own error (RayTaskError): it finished
            pass
        finished.add(ref)
    candidates = [pair for pair in in_flight if pair[1] not in finished] or in_flight
    return min(candidates, key=lambda pair: pair[0])[1]


def _fail_all(queue: deque[tuple[PoolTask, int]], on_fail: Callable[[PoolTask, str], None], why: str) -> None:
    while queue:
        on_fail(queue.popleft()[0], why)


def _why(e: BaseException) -> str:
    """One line: the error's first line and, for a traceback (a constructor that raised), its last."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
    text = lines[0][:300] + (f" ... {lines[-1][:300]}" if len(lines) > 1 else "")
    return f"{type(e).__name__}: {text}"
