"""A real Label Studio for the tests: started from its own virtual environment on a loopback port,
its data and SQLite database in a folder of the test's, with a known user and API token.

Label Studio 1.23.2 and label-studio-sdk 2.1.2 pin an older numpy than ours, so they live in
``$GSAM_LABEL_STUDIO_VENV`` (default ``~/.cache/grounded-sam/label-studio-venv``), made by
``tests/install_label_studio.sh``; :func:`label_studio_python` runs that script first (it returns
at once when the venv is complete), so a test never finds Label Studio missing. The script also
leaves an empty, migrated database in the venv; each server starts on a copy of it (~7 s instead
of the 40-100 s that migrating a new one takes on 2 cores). The SDK is driven
the same way: ``tests/label_studio_sdk_calls.py`` runs under that venv's python, JSON in, JSON out.

What Label Studio 1.23 needs to be driven by a test (read from its ``server.py`` and settings):

- ``LABEL_STUDIO_USERNAME`` / ``LABEL_STUDIO_PASSWORD`` make the user at start, and
  ``LABEL_STUDIO_USER_TOKEN`` sets its (legacy) API token; legacy tokens are off for a new
  organisation unless ``LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN`` is true. The token is also what
  Label Studio hands an ML backend at ``/setup`` (``access_token``) to fetch ``/data/upload/...``.
- ``ML_BLOCK_LOCAL_IP=false`` and ``SSRF_PROTECTION_ENABLED=false``: without both, Label Studio
  refuses an ML backend on 127.0.0.1 (the second guards the webhook it makes for the backend:
  ``POST /api/ml/`` answers 403 "URL resolves to a reserved network address").
- ``LABEL_STUDIO_HOST``: the URL it gives the backend as ``hostname``.
- No traffic off the machine: Sentry (``SENTRY_DSN``, ``FRONTEND_SENTRY_DSN`` empty), analytics
  and the version check off; ``--internal-host 127.0.0.1`` binds loopback only.

The server runs in its own process group and is stopped by signalling the group, whatever the
test did (:func:`running_label_studio` is a context manager); on Linux it also gets SIGTERM if
the test process itself is killed before it can clean up.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
INSTALL = HERE / "install_label_studio.sh"
SDK_CALLS = HERE / "label_studio_sdk_calls.py"


def label_studio_venv() -> Path:
    default = Path.home() / ".cache" / "grounded-sam" / "label-studio-venv"
    return Path(os.environ.get("GSAM_LABEL_STUDIO_VENV", default))


def migrated_database() -> Path:
    """The empty database with Label Studio's migrations applied (tests/install_label_studio.sh)."""
    return label_studio_venv() / "grounded-sam" / "label_studio.sqlite3"


def label_studio_python() -> Path:
    """The python of Label Studio's venv, installed first if it is not complete."""
    done = subprocess.run(["bash", str(INSTALL)], capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{INSTALL.name} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return label_studio_venv() / "bin" / "python"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_sdk(python: Path, step: str, request: dict[str, Any], timeout_s: float = 300) -> dict[str, Any]:
    """Run ``step`` of ``tests/label_studio_sdk_calls.py`` under Label Studio's ``python``; its JSON answer."""
    done = subprocess.run([str(python), str(SDK_CALLS), step], input=json.dumps(request), capture_output=True,
                          text=True, timeout=timeout_s, env=_clean_env(), check=False)
    if done.returncode != 0:
        raise RuntimeError(f"SDK step {step!r} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout)


@dataclass(frozen=True)
class LabelStudio:
    """A running server: its URL, the user's legacy API token, and the venv's python for the SDK."""

    url: str
    token: str
    username: str
    password: str
    python: Path
    folder: Path

    def sdk(self, step: str, request: dict[str, Any], timeout_s: float = 300) -> dict[str, Any]:
        """Run ``step`` of ``tests/label_studio_sdk_calls.py`` against this server; its JSON answer."""
        try:
            return run_sdk(self.python, step, {"url": self.url, "token": self.token, **request}, timeout_s)
        except RuntimeError as e:
            raise RuntimeError(f"{e}\nLabel Studio's log (end):\n{self.log_tail()}") from None

    def log_tail(self, chars: int = 3000) -> str:
        log = self.folder / "label-studio.log"
        return log.read_text(errors="replace")[-chars:] if log.exists() else "(no log)"


def _clean_env() -> dict[str, str]:
    """Our environment without what would make Label Studio's python import our packages."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    venv_bin = str(Path(sys.prefix) / "bin")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    return env


@contextlib.contextmanager
def running_label_studio(folder: Path, start_timeout_s: float = 300) -> Iterator[LabelStudio]:
    """Start Label Studio with its data in ``folder``; stop it (its whole process group) on exit."""
    python = label_studio_python()
    (folder / "data").mkdir(parents=True, exist_ok=True)
    database = folder / "data" / "label_studio.sqlite3"
    shutil.copyfile(migrated_database(), database)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    username, password, token = "tester@localhost", secrets.token_urlsafe(12), secrets.token_hex(20)
    env = _clean_env() | {
        "LABEL_STUDIO_BASE_DATA_DIR": str(folder / "data"),
        "DATABASE_NAME": str(database),
        "LABEL_STUDIO_HOST": url,
        "LABEL_STUDIO_USERNAME": username,
        "LABEL_STUDIO_PASSWORD": password,
        "LABEL_STUDIO_USER_TOKEN": token,
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
        "ML_BLOCK_LOCAL_IP": "false", "SSRF_PROTECTION_ENABLED": "false",
        "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": "",
        "COLLECT_ANALYTICS": "false", "LATEST_VERSION_CHECK": "false",
        "LOG_LEVEL": "WARNING",
    }
    log = (folder / "label-studio.log").open("wb")
    process = subprocess.Popen(
        [str(python.parent / "label-studio"), "start", "--no-browser", "--internal-host", "127.0.0.1",
         "--port", str(port)],
        cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True, preexec_fn=_die_with_parent)  # its own process group: stopped as one below
    server = LabelStudio(url, token, username, password, python, folder)
    try:
        deadline = time.monotonic() + start_timeout_s
        while not _healthy(url):
            if process.poll() is not None:
                raise RuntimeError(f"Label Studio exited ({process.returncode}) before it answered:\n{server.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"Label Studio did not answer {url}/health in {start_timeout_s} s:\n{server.log_tail()}")
            time.sleep(0.5)
        yield server
    finally:
        _stop(process)
        log.close()


if sys.platform.startswith("linux"):
    import ctypes

    _prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the child only calls it
else:
    _prctl = None


def _die_with_parent() -> None:
    """In the child before exec (Linux): SIGTERM when the test process dies without a teardown."""
    if _prctl is not None:
        _prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200 and json.loads(response.read()).get("status") == "UP"
    except (OSError, ValueError):
        return False


def _stop(process: subprocess.Popen) -> None:
    for sig, wait_s in ((signal.SIGTERM, 15), (signal.SIGKILL, 15)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=wait_s)
            break
        except subprocess.TimeoutExpired:
            continue
