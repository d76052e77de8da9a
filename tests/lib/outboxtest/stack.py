"""The local stack (scripts/stack): Postgres and one nats-server or a 3-node
JetStream cluster. Every action goes through scripts/stack, which keeps the
PIDs and ports; this reads its env file."""
import os
import shlex
import shutil
import signal
import subprocess
import time

from . import proc

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
STACK = os.path.join(REPO, "scripts", "stack")


class StackError(RuntimeError):
    pass


class Stack:
    def __init__(self, stack_dir):
        self.dir = stack_dir
        self.env = {}
        self.owned = False

    def _run(self, *args, check=True):
        env = dict(os.environ, STACK_DIR=self.dir)
        env.pop("NATS_NODES", None)
        r = subprocess.run([STACK, *args], env=env, capture_output=True, text=True, timeout=120)
        if check and r.returncode != 0:
            raise StackError("scripts/stack %s: %s" % (" ".join(args), (r.stderr or r.stdout).strip()))
        return r

    def up(self, nodes=1):
        """Starts a stack (nodes = 1 or 3), unless one runs in this folder."""
        self._run("cluster" if nodes == 3 else "up")
        self.owned = True
        self.load()

    def load(self):
        """Reads the env file of a running stack."""
        text = self._run("env").stdout
        self.env = {}
        for line in text.splitlines():
            words = shlex.split(line, comments=True)
            if len(words) == 2 and words[0] == "export" and "=" in words[1]:
                key, value = words[1].split("=", 1)
                self.env[key] = value
        return self

    def down(self):
        self._run("down", check=False)

    def keep_logs(self, into):
        """Copies the nats-servers' logs into INTO (before down removes them)."""
        for name in sorted(os.listdir(self.dir)):
            if name.startswith("nats") and name.endswith(".log"):
                shutil.copy(os.path.join(self.dir, name), into)

    # --- what the services and checks need
    @property
    def nodes(self):
        """Node numbers: [0] for a single nats-server, [1, 2, 3] for a cluster."""
        n = int(self.env.get("STACK_NATS_NODES", "1"))
        return [0] if n <= 1 else list(range(1, n + 1))

    @property
    def nats_url(self):
        return self.env["STACK_NATS_URL"]

    def pg_url(self, db):
        return self.env["STACK_PG_URL_" + db.upper()]

    def pg_port(self):
        return int(self.env["STACK_PG_PORT"])

    def node_var(self, i, what):
        if i == 0:
            return self.env["STACK_NATS_" + what]
        return self.env["STACK_NATS_N%d_%s" % (i, what)]

    def node_client_url(self, i):
        return "nats://127.0.0.1:%s" % self.node_var(i, "PORT")

    def node_monitor_url(self, i):
        return "http://127.0.0.1:%s" % self.node_var(i, "MONITOR_PORT")

    def ports(self):
        """Every port the stack uses (to keep services off them)."""
        ports = {self.pg_port()}
        for i in self.nodes:
            for what in ("PORT", "MONITOR_PORT", "CLUSTER_PORT"):
                try:
                    ports.add(int(self.node_var(i, what)))
                except (KeyError, ValueError):
                    pass
        return ports

    def node_log(self, i):
        return self.node_var(i, "LOG")

    def node_name(self, i):
        return "n%d" % i if i else "nats"

    # --- faults, by PID
    def node_pid(self, i):
        """The PID of node i's nats-server if it runs (checked against its
        command line: PIDs are recycled), else None."""
        if i == 0:
            pid_file, mark = os.path.join(self.dir, "nats.pid"), self.env["STACK_NATS_STORE"]
        else:
            pid_file, mark = self.node_var(i, "PID_FILE"), self.node_var(i, "CONF")
        try:
            with open(pid_file) as f:
                pid = int(f.read().split()[0])
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                ok = mark.encode() in f.read()
        except (OSError, ValueError, IndexError):
            return None
        return pid if ok and proc.alive(pid) else None

    def _signal(self, nodes, sig):
        """Sends SIG to every running node of NODES at once; with SIGKILL, waits until they are gone."""
        pids = [p for p in (self.node_pid(i) for i in nodes) if p]
        for pid in pids:
            os.kill(pid, sig)
        if sig == signal.SIGKILL:
            deadline = time.monotonic() + 30
            while any(proc.alive(p) for p in pids) and time.monotonic() < deadline:
                time.sleep(0.02)
        return pids

    def node(self, what, i):
        """what: kill (-9), freeze (SIGSTOP), thaw (SIGCONT) are signals sent
        here at once; start, wipe and pid go through scripts/stack."""
        sig = {"kill": signal.SIGKILL, "freeze": signal.SIGSTOP, "thaw": signal.SIGCONT}.get(what)
        if sig is not None:
            if not self._signal([i], sig):
                raise StackError("node %d is not running" % i)
            return ""
        return self._run("node-" + what, str(i)).stdout.strip()

    def nats_kill(self):
        """kill -9 every nats-server of the stack at once."""
        self._signal(self.nodes, signal.SIGKILL)

    def nats_start(self):
        self._run("nats-start")

    def pg_stop(self):
        self._run("pg-stop")

    def pg_start(self):
        self._run("pg-start")
