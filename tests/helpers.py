"""Helpers shared by the tests: waiting for a state, driver subprocesses, process checks.

Every wait here polls for a condition with a deadline; no test sleeps and
hopes. ``ember_processes`` finds the processes of this test session's clusters
only (by their session directory under ``EMBER_TEMP_DIR``), so that a cluster
someone else runs on the same machine never makes a test fail.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request

import psutil

from ember.dashboard import read_url
from ember.util import testing

EMBER_MODULES = ("ember.gcs", "ember.raylet", "ember.core_worker", "ember.autoscaler",
                 "ember.dashboard")


def wait_for_condition(predicate, timeout: float = 10.0, interval: float = 0.02,
                       message: str = "condition") -> None:
    """Poll ``predicate()`` until it is true; fail the test after ``timeout`` seconds."""
    try:
        testing.wait_for_condition(predicate, timeout, retry_interval_ms=interval * 1000)
    except RuntimeError as exc:
        raise AssertionError(f"timed out after {timeout} s waiting for {message}: {exc}") \
            from None


def wait_for_file(path, timeout: float = 20.0) -> None:
    wait_for_condition(lambda: os.path.exists(path), timeout, message=f"file {path}")


def _session_of(proc: psutil.Process) -> str | None:
    """The session dir a process belongs to, from its command line or environment."""
    cmdline = proc.cmdline()
    if not any(m in arg for arg in cmdline for m in EMBER_MODULES):
        return None
    for i, arg in enumerate(cmdline):
        if arg in ("--session-dir", "--log-file") and i + 1 < len(cmdline):
            return cmdline[i + 1]
    try:
        return proc.environ().get("EMBER_SESSION_DIR", "")
    except (psutil.AccessDenied, psutil.ZombieProcess):
        return ""


def ember_processes(under: str) -> list[psutil.Process]:
    """Live ember daemons and workers whose session dir is inside ``under``."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            session = _session_of(proc)
            if session is not None and session.startswith(under):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def describe(procs) -> str:
    lines = []
    for proc in procs:
        try:
            lines.append(f"{proc.pid}: {' '.join(proc.cmdline())}")
        except psutil.Error:
            lines.append(f"{proc.pid}: <gone>")
    return "\n".join(lines)


def wait_no_ember_processes(under: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        left = ember_processes(under)
        if not left:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"ember processes left behind:\n{describe(left)}")
        time.sleep(0.05)


def ember_shm_entries() -> set[str]:
    try:
        return {name for name in os.listdir("/dev/shm") if "ember" in name.lower()}
    except FileNotFoundError:
        return set()


def write_script(tmp_path, code: str, name: str = "driver.py") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(code))
    return str(path)


def run_driver(tmp_path, code: str, timeout: float = 60.0, env=None,
               name: str = "driver.py") -> subprocess.CompletedProcess:
    """Run ``code`` as a driver script in a fresh interpreter; return its output."""
    script = write_script(tmp_path, code, name)
    proc = subprocess.run([sys.executable, script], capture_output=True, text=True,
                          timeout=timeout, cwd=str(tmp_path),
                          env=dict(os.environ, **(env or {})))
    return proc


class DriverProcess:
    """A driver script running in the background, its stdout read line by line.

    Tests wait for a line the driver prints to report a state (``READY``), rather
    than for a fixed time. A reader thread collects lines as they come.
    """

    def __init__(self, tmp_path, code: str, name: str = "driver.py", env=None):
        script = write_script(tmp_path, code, name)
        self.proc = subprocess.Popen(
            [sys.executable, script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, cwd=str(tmp_path),
            env=dict(os.environ, **(env or {})))
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._eof = False
        self._err: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        # stderr is drained too, so a chatty driver never blocks on a full pipe.
        self._err_reader = threading.Thread(
            target=lambda: self._err.extend(self.proc.stderr), daemon=True)
        self._err_reader.start()

    @property
    def stderr(self) -> str:
        return "".join(self._err)

    def snapshot(self) -> list[str]:
        """The stdout lines read so far."""
        with self._cond:
            return list(self.lines)

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def wait_for_line(self, predicate, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        checked = 0
        with self._cond:
            while True:
                for line in self.lines[checked:]:
                    if predicate(line):
                        return line
                checked = len(self.lines)
                if self._eof:
                    self.proc.wait()
                    self._err_reader.join(5)
                    raise AssertionError(
                        f"driver exited with {self.proc.returncode} before printing the "
                        "expected line; stdout:\n" + "\n".join(self.lines)
                        + "\nstderr:\n" + self.stderr)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError("driver did not print the expected line in time; "
                                         "stdout so far:\n" + "\n".join(self.lines)
                                         + "\nstderr so far:\n" + self.stderr)
                self._cond.wait(remaining)

    def finish(self, timeout: float = 30.0) -> tuple[str, str]:
        """Tell the driver to go on (close its stdin); return all its stdout and stderr."""
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        self.proc.wait(timeout)
        self._reader.join(timeout)
        self._err_reader.join(timeout)
        return "\n".join(self.lines), self.stderr

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def path_then(path, value, timeout: float = 60.0):
    """Return ``value`` once ``path`` exists (a task body: wrap it with ember.remote)."""
    wait_for_file(path, timeout)
    return value


def drive(cluster) -> None:
    """Make this process the driver of ``cluster`` (an ember.cluster_utils.Cluster)."""
    import ember
    from ember.core_worker import context
    if not ember.is_initialized() or context.core.gcs_address != cluster.address:
        ember.shutdown()
        ember.init(address=cluster.address)


def child_pid(marker: str) -> int:
    """The pid of this process's descendant whose command line contains ``marker``."""
    for proc in psutil.Process().children(recursive=True):
        try:
            if marker in " ".join(proc.cmdline()):
                return proc.pid
        except psutil.Error:
            continue
    raise AssertionError(f"no process running {marker}")


def make_tls_files(directory, ips=("127.0.0.1",)) -> dict[str, str]:
    """A CA and a certificate it signed for ``ips`` (PEM files in ``directory``).

    Returns the ``EMBER_TLS_*`` settings that use them, with ``EMBER_USE_TLS=1``.
    """
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(common_name):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

    def write(filename, data):
        path = os.path.join(str(directory), filename)
        with open(path, "wb") as f:
            f.write(data)
        return path

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("ember test CA"))
          .issuer_name(name("ember test CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(name("ember node"))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    return {
        "EMBER_USE_TLS": "1",
        "EMBER_TLS_CA_CERT": write("ca.pem", ca.public_bytes(pem)),
        "EMBER_TLS_SERVER_CERT": write("node.pem", cert.public_bytes(pem)),
        "EMBER_TLS_SERVER_KEY": write("node.key", key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())),
    }


def dashboard_url(session_dir: str, timeout: float = 20.0) -> str:
    """The URL of the head's dashboard (``http://HOST:PORT``), once it answers:
    ``ember.init()`` returns before the dashboard process listens. The answer
    must name this session: another cluster's dashboard on the port (a race of
    two heads choosing it) is a failure, not a dashboard to test."""
    url = read_url(session_dir)
    assert url, f"the head of {session_dir} started no dashboard"
    answer = {}

    def answers() -> bool:
        try:
            answer.update(json.loads(urllib.request.urlopen(url + "/api/version",
                                                            timeout=2).read()))
            return True
        except OSError:
            return False
    wait_for_condition(answers, timeout, interval=0.1, message=f"the dashboard at {url}")
    session = os.path.basename(os.path.normpath(session_dir))
    assert answer.get("session_name") == session, (
        f"{url} is the dashboard of session {answer.get('session_name')}, not of {session}")
    return url


@contextlib.contextmanager
def cluster_with_dashboard(**init_kwargs):
    """A local cluster whose dashboard listens on a free port, as its URL.

    Not 8265: the head picks a free port before its dashboard binds it (seconds
    later, at nice 10), so two heads started together on one machine can both
    pick 8265, and one test would read the other's cluster."""
    import ember
    ember.init(dashboard_port=0, **init_kwargs)
    try:
        yield dashboard_url(ember.get_runtime_context()._core().session_dir)
    finally:
        ember.shutdown()
