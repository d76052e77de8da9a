"""Loopback ports, bounded waits and processes by PID."""
import os
import random
import socket
import time


def now():
    """Wall-clock seconds (comparable with Postgres timestamps on this host)."""
    return time.time()


def wait_until(pred, timeout, step=0.2):
    """Polls pred() until it returns a true value or timeout seconds pass;
    returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(step)


def port_in_use(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return low if low > 21000 else 32768


def free_port(exclude=()):
    """A random port nobody listens on, below the kernel's range for outgoing
    connections (so that no client socket takes it while its server is down)."""
    high = _ephemeral_low() - 1
    for _ in range(100):
        port = random.randint(20000, high)
        if port not in exclude and not port_in_use(port):
            return port
    raise RuntimeError("no free TCP port found in 20000-%d" % high)


def alive(pid):
    """PID runs and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _socket_inodes(pid):
    inodes = set()
    try:
        fds = os.listdir("/proc/%d/fd" % pid)
    except OSError:
        return inodes
    for fd in fds:
        try:
            link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    return inodes


def local_ports(pid):
    """The local TCP ports of the sockets PID holds (e.g. its outgoing
    connections), from /proc/net/tcp{,6}."""
    inodes = _socket_inodes(pid)
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if len(cols) > 9 and cols[9] in inodes:
                        ports.add(int(cols[1].rsplit(":", 1)[1], 16))
        except OSError:
            continue
    return ports
