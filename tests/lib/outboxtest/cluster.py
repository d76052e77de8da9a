"""What the NATS monitoring endpoints say: the meta, stream and consumer
leaders (/jsz), and which node holds a process's connection (/connz).
Replica state is only accurate on the leader's own monitoring port, so the
details are asked of the leader. A frozen node does not answer: every request
is bounded and a node that does not answer is skipped.

    python3 -m outboxtest.cluster leaders     (STACK_DIR or <repo>/.stack)
"""
import json
import os
import sys
import urllib.request

from . import proc
from .stack import REPO, Stack


def get_json(url, timeout=2.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.load(r)


def _try_json(url, timeout=2.0):
    try:
        return get_json(url, timeout)
    except (OSError, ValueError):
        return None


def jsz(stack, i, timeout=2.0):
    return _try_json(stack.node_monitor_url(i) + "/jsz?streams=1&consumers=1", timeout)


def _streams(j):
    for acc in (j or {}).get("account_details") or []:
        for st in acc.get("stream_detail") or []:
            yield st


def leaders(stack):
    """{"meta": "n2", "streams": {"ORDERS": "n1", ...},
        "consumers": {"ORDERS/inventory-service": "n3", ...}}; None where no
    node knows one (no quorum, or nothing answers)."""
    out = {"meta": None, "streams": {}, "consumers": {}}
    for i in stack.nodes:
        j = jsz(stack, i)
        if not j:
            continue
        meta = (j.get("meta_cluster") or {}).get("leader")
        if meta and not out["meta"]:
            out["meta"] = meta
        for st in _streams(j):
            name = st.get("name")
            lead = (st.get("cluster") or {}).get("leader")
            if lead and not out["streams"].get(name):
                out["streams"][name] = lead
            for c in st.get("consumer_detail") or []:
                key = "%s/%s" % (name, c.get("name"))
                lead = (c.get("cluster") or {}).get("leader")
                if lead and not out["consumers"].get(key):
                    out["consumers"][key] = lead
    return out


def streams_settled(stack, names):
    """Each named stream is empty on its leader, and (in a cluster) the
    leader says every replica is current with no lag: a purge has been
    applied everywhere, not only where it was asked."""
    single = stack.nodes == [0]
    lead = {} if single else leaders(stack)["streams"]
    for name in names:
        node = 0 if single else node_index(stack, lead.get(name))
        if node is None:
            return False
        st = next((x for x in _streams(jsz(stack, node)) if x.get("name") == name), None)
        if not st or (st.get("state") or {}).get("messages", 0) != 0:
            return False
        for r in (st.get("cluster") or {}).get("replicas") or []:
            if not r.get("current") or r.get("lag", 0) != 0:
                return False
    return True


def node_index(stack, name):
    """"n2" -> 2 (the stack's node numbering)."""
    for i in stack.nodes:
        if stack.node_name(i) == name:
            return i
    return None


def connz_ports(stack, i):
    """The client ports of the connections node i holds."""
    j = _try_json(stack.node_monitor_url(i) + "/connz?limit=1000")
    if not j:
        return set()
    return {c.get("port") for c in j.get("connections") or []}


def node_of(stack, pid):
    """The node holding PID's NATS connection (None if none is seen)."""
    ports = proc.local_ports(pid)
    for i in stack.nodes:
        if ports & connz_ports(stack, i):
            return i
    return None


def main(argv):
    if argv[1:] != ["leaders"]:
        print("usage: python3 -m outboxtest.cluster leaders", file=sys.stderr)
        return 2
    stack = Stack(os.environ.get("STACK_DIR") or os.path.join(REPO, ".stack")).load()
    lead = leaders(stack)
    print("meta %s" % (lead["meta"] or "-"))
    for name, node in sorted(lead["streams"].items()):
        print("stream %s %s" % (name, node))
    for name, node in sorted(lead["consumers"].items()):
        print("consumer %s %s" % (name, node))
    return 0 if lead["meta"] or stack.nodes == [0] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
