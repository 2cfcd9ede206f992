"""A real two-node Ray cluster on this machine, for tests: ``ray start`` processes, stopped in teardown.

The head (``ray start --head``) and a second node (``ray start --address=...``) are separate
process trees (``start_new_session``), each with its own raylet, object store and workers. When
the machine allows it (root, ``unshare``/``nsenter``), every process of the cluster, and every
driver started through :meth:`LocalCluster.command`, lives in a private network namespace whose
only interface is ``lo``, so nothing leaves 127.0.0.1 (Ray would otherwise advertise the
machine's interface address). Token auth is off (``RAY_AUTH_MODE=disabled``). Every wait is
bounded; :meth:`LocalCluster.close` kills whatever the cluster started, however the test ended.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))
WORKER_TITLE = "ray::PoolWorker"  # the labeling actor's process title (grounded_sam.labeling.ray_pool)


def _netns_available() -> bool:
    try:
        r = subprocess.run(["unshare", "--net", "sh", "-c", "ip link set lo up"], capture_output=True, timeout=20)
        return r.returncode == 0 and shutil.which("nsenter") is not None
    except (OSError, subprocess.TimeoutExpired):
        return False


def _free_port() -> int:
    for port in range(21000, 30000, 7):  # outside Ray's default worker port range (10002-19999)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port for the Ray head")


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (Ray's workers leave their node's process group)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _signal_and_wait(proc: subprocess.Popen, pids: list[int], sig: int, grace: float) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass


class LocalCluster:
    """Head + one worker node, ``cpus`` CPUs each (see module docs). Use as a context manager."""

    def __init__(self, cpus: int = 1, object_store_bytes: int = 200 * 1024**2) -> None:
        self.cpus, self.object_store_bytes = cpus, object_store_bytes
        self.root = Path(tempfile.mkdtemp(prefix="gsray-"))  # short: Ray's socket paths must fit 107 bytes
        self.env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
                    "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent),
                                                                os.environ.get("PYTHONPATH")]))}
        self.holder: subprocess.Popen | None = None
        self.head: subprocess.Popen | None = None
        self.node: subprocess.Popen | None = None
        self._logs: list = []
        self.port = 6379

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> LocalCluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, timeout: float = 180.0) -> None:
        if _netns_available():
            self.holder = subprocess.Popen(["unshare", "--net", "sh", "-c", "ip link set lo up && exec sleep 86400"],
                                           start_new_session=True)
            deadline = time.monotonic() + 20
            while "sleep" not in cmdline(self.holder.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
        else:  # no private namespace here: the cluster still binds to 127.0.0.1, on a free port
            self.port = _free_port()
        self.head = self._ray_start("head", ["--head", f"--port={self.port}", "--include-dashboard=false",
                                             f"--temp-dir={self.root / 'ray'}"])
        self._wait_started(self.head, "head", timeout)
        self.node = self.start_node(timeout)

    def start_node(self, timeout: float = 180.0) -> subprocess.Popen:
        """Start (again) the second node and wait until it has joined."""
        node = self._ray_start("node", [f"--address={self.address}"])
        self._wait_started(node, "node", timeout)
        return node

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def in_netns(self) -> bool:
        return self.holder is not None

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the cluster's network namespace (when there is one)."""
        if self.holder is None:
            return argv
        return ["nsenter", f"--net=/proc/{self.holder.pid}/ns/net", *argv]

    def _ray_start(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 - closed in close()
        self._logs.append(log)
        argv = [RAY, "start", "--block", "--node-ip-address=127.0.0.1", f"--num-cpus={self.cpus}",
                f"--object-store-memory={self.object_store_bytes}", "--disable-usage-stats", *args]
        return subprocess.Popen(self.command(argv), stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                start_new_session=True)

    def _wait_started(self, proc: subprocess.Popen, name: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        log = self.root / f"{name}.log"
        while time.monotonic() < deadline:
            if "Ray runtime started" in log.read_text(errors="replace"):
                return
            if proc.poll() is not None:
                raise RuntimeError(f"ray start ({name}) exited with {proc.returncode}:\n{self.log_tail(name)}")
            time.sleep(0.2)
        raise TimeoutError(f"ray start ({name}) did not start within {timeout:.0f} s:\n{self.log_tail(name)}")

    def log_tail(self, name: str, lines: int = 30) -> str:
        try:
            return "\n".join((self.root / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # ------------------------------------------------------------------ processes
    def workers(self, node: subprocess.Popen | None = None, running: bool = False) -> list[int]:
        """Pids of the labeling actors' processes (on one node, or on both); ``running``: only those
        inside a task (their title is ``ray::PoolWorker.run``)."""
        roots = [node] if node is not None else [p for p in (self.head, self.node) if p is not None]
        title = WORKER_TITLE + (".run" if running else "")
        return [pid for root in roots for pid in descendants(root.pid) if cmdline(pid).startswith(title)]

    def kill_node(self, proc: subprocess.Popen, sig: int = signal.SIGKILL, grace: float = 10.0) -> None:
        """Stop a node's whole process tree: its ``ray start``, raylet, agents and workers."""
        if proc.poll() is not None:
            return
        pids = [proc.pid, *descendants(proc.pid)]
        _signal_and_wait(proc, pids, sig, grace)
        _signal_and_wait(proc, [*pids, *descendants(proc.pid)], signal.SIGKILL, grace)  # whatever survived

    def close(self) -> None:
        """Kill every process the cluster started and remove its files (safe to call twice)."""
        for proc in (self.node, self.head):
            if proc is not None:
                self.kill_node(proc)
        if self.holder is not None and self.holder.poll() is None:
            os.killpg(self.holder.pid, signal.SIGKILL)
            self.holder.wait(timeout=10)
        for log in self._logs:
            log.close()
        self._logs = []
        shutil.rmtree(self.root, ignore_errors=True)


# ---------------------------------------------------------------------- pool tasks for tests
# (imported by the cluster's workers: LocalCluster puts tests/ on their PYTHONPATH)
class EchoModel:
    """A factory (picklable) of a model that needs nothing: the pool's own behaviour, fast."""

    def __call__(self) -> str:
        return "model"


class BrokenFactory:
    def __call__(self) -> str:
        raise ValueError("no such checkpoint: /nowhere/sam.pt")


def crash_on(model: str, poison: int, payload: int) -> int:
    """A pool task: kills its own worker process when ``payload == poison``."""
    if payload == poison:
        os._exit(1)
    return payload * 10
