"""order-service and inventory-service instances (release binaries in bin/),
each on a free loopback port, started, killed (-9) and restarted by PID."""
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request

from . import proc
from .stack import REPO

STOP_SECS = 10    # SIGTERM -> exit (the contract's bound)
START_SECS = 15   # "listening on port" after a start
READY_SECS = 30   # /readyz 200 after a start

# The services read these; nothing of the caller's environment leaks in.
SERVICE_VARS = ("FAILPOINTS", "PORT", "DATABASE_URL", "NATS_URL", "MIGRATIONS_DIR", "LOG_LEVEL",
                "JS_REPLICAS", "HTTP_THREADS", "RELAY_SWEEP_MS", "RELAY_BATCH",
                "RELAY_MAX_ATTEMPTS", "OUTBOX_RETENTION", "PROCESSED_RETENTION",
                "STREAM_MAX_AGE", "CONSUMER_BATCH", "CONSUMER_WORKERS", "REDRIVE_AFTER", "ADMIN_TOKEN", "ADMIN_PORT")


def http(method, url, body=None, timeout=5.0):
    """(status, body text); status 0 when nothing answered."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except (OSError, ValueError):
        return 0, ""


LIVE = set()  # every instance running, for stop_all


def note_pid(pid):
    """Every process started, also in $ITEST_TMP/pids: scripts/test stops by
    those PIDs whatever is left once the tests ended, however they ended."""
    tmp = os.environ.get("ITEST_TMP")
    if tmp:
        with open(os.path.join(tmp, "pids"), "a") as f:
            f.write("%d\n" % pid)


def stop_all():
    """kill -9 every instance still running (the test is ending abnormally)."""
    for svc in list(LIVE):
        svc.kill9()


class Service:
    """One instance. kind: "order" or "inventory"; name: e.g. "order-2"."""

    def __init__(self, kind, name, workdir, env, problems):
        self.kind, self.name = kind, name
        self.env = env            # PORT is added here
        self.log = os.path.join(workdir, name + ".log")
        self.port = None
        self.popen = None
        self.lives = 0
        self.life_offset = 0
        self.problems = problems  # a list shared with the scenario

    @property
    def pid(self):
        return self.popen.pid if self.popen else None

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def _note(self, text):
        with open(self.log, "a") as f:
            f.write(json.dumps({"e2e": text}) + "\n")

    def _log_since(self, offset):
        try:
            with open(self.log, "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def life_log(self):
        """The log lines of the current (or last) life."""
        return self._log_since(self.life_offset)

    def alive(self):
        return self.popen is not None and self.popen.poll() is None

    def start(self, exclude_ports=()):
        """Starts a life; the first one on a free port (another one if that
        port is taken meanwhile), later ones on the same port."""
        for _ in range(3):
            if self.port is None:
                self.port = proc.free_port(exclude_ports)
            self.lives += 1
            self._note("start %s, life %d, port %d" % (self.name, self.lives, self.port))
            offset = self.life_offset = os.path.getsize(self.log)
            env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARS}
            env.update(self.env, PORT=str(self.port))
            with open(self.log, "ab") as out:
                self.popen = subprocess.Popen(
                    [os.path.join(REPO, "bin", self.kind + "-service")], env=env, cwd=REPO,
                    stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
            LIVE.add(self)
            note_pid(self.popen.pid)
            said = proc.wait_until(lambda: not self.alive() or any(
                s in self._log_since(offset) for s in ("listening on port", "cannot listen")),
                START_SECS, 0.02)
            text = self._log_since(offset)
            if "listening on port %d" % self.port in text:
                return True
            self.popen.wait(timeout=STOP_SECS) if not self.alive() else self.kill9()
            if "cannot listen" in text and self.lives == 1:
                self.port, self.lives = None, 0
                continue
            self.problems.append("%s did not start (%s)" % (
                self.name, "exit status %s" % self.popen.returncode if said else "no 'listening' line"))
            return False
        self.problems.append("%s: 3 ports in a row were taken" % self.name)
        return False

    def ready(self):
        return http("GET", self.url + "/readyz", timeout=3)[0] == 200

    def wait_ready(self, timeout=READY_SECS):
        if proc.wait_until(lambda: self.ready() or not self.alive(), timeout, 0.1) and self.alive():
            return True
        self.problems.append("%s not ready (/readyz 200) within %ds%s" % (
            self.name, timeout, "" if self.alive() else " (it exited: %s)" % self.popen.returncode))
        return False

    def kill9(self):
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
            self._note("killed %s (pid %d) with SIGKILL" % (self.name, self.pid))
        if self.popen:
            self.popen.wait(timeout=STOP_SECS)
        LIVE.discard(self)

    def stop(self):
        """SIGTERM; exit 0 within STOP_SECS expected. A death nobody caused is a problem."""
        if not self.popen:
            return
        if not self.alive():
            self.problems.append("%s (pid %d) had died (exit status %s) although nothing killed it"
                                 % (self.name, self.pid, self.popen.returncode))
            LIVE.discard(self)
            self.popen = None
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            rc = self.popen.wait(timeout=STOP_SECS)
        except subprocess.TimeoutExpired:
            os.kill(self.pid, signal.SIGKILL)
            rc = "killed after %ds" % STOP_SECS
            self.popen.wait(timeout=STOP_SECS)
        LIVE.discard(self)
        if rc != 0:
            self.problems.append("%s exited with status %s on SIGTERM (0 expected within %ds)"
                                 % (self.name, rc, STOP_SECS))
        self.popen = None

    def forget(self):
        """After a kill -9 the scenario caused: nothing to stop."""
        self.popen = None

    def metric(self, sample):
        """The value of one /metrics sample, e.g. 'orders_redriven_total'; None if absent."""
        code, text = http("GET", self.url + "/metrics", timeout=5)
        if code != 200:
            return None
        for line in text.splitlines():
            if line.startswith(sample + " "):
                return float(line.split()[1])
        return None

    def tail(self, n=20):
        try:
            with open(self.log, errors="replace") as f:
                return [l.rstrip()[:400] for l in f.readlines()[-n:]]
        except OSError:
            return []
