"""The HA chaos scenarios: a 3-node JetStream cluster (JS_REPLICAS=3), two
instances of each service, orders spread over both order-service instances,
one fault each, mid-flow. The checks are those of the single-node test
(tests/lib/outboxtest/checks.py). Run through tests/e2e/ha."""
import os
import signal
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from outboxtest import cluster, proc, services  # noqa: E402
from outboxtest.scenario import Scenario, Settings, pick  # noqa: E402
from outboxtest.stack import Stack  # noqa: E402

DOWN_SECS = 30     # the meta leader stays down, the frozen node stays frozen
RESTART_SECS = 5   # the killed stream leader comes back after this
THAW_SETTLE = 30   # after SIGCONT, everything settles within this


def stream_leader(s):
    """kill -9 the ORDERS stream leader, restart it after 5 s."""
    lead = s.leaders()["streams"].get("ORDERS")
    if not lead:
        s.problems.append("no ORDERS stream leader found (/jsz)")
        return
    i = s.node_of(lead)
    s.fault_begins("kill -9 %s, the ORDERS stream leader" % lead)
    s.stack.node("kill", i)
    s.sleep_since_fault(RESTART_SECS)
    s.stack.node("start", i)
    s.fault_ends("%s restarted" % lead)
    s.say("leaders now: %s" % s.leaders())


def meta_leader(s):
    """kill -9 the meta leader, keep it down 30 s."""
    lead = s.leaders()["meta"]
    if not lead:
        s.problems.append("no meta leader found (/jsz)")
        return
    i = s.node_of(lead)
    s.fault_begins("kill -9 %s, the meta leader, for %d s" % (lead, DOWN_SECS))
    s.stack.node("kill", i)
    s.sleep_since_fault(DOWN_SECS)
    s.stack.node("start", i)
    s.fault_ends("%s restarted" % lead)


def freeze(s):
    """SIGSTOP the node that holds the inventory instances' connections for 30 s."""
    i = s.colocate(s.inventory_svc)
    if i is None:
        return
    s.fault_begins("SIGSTOP %s for %d s" % (s.stack.node_name(i), DOWN_SECS))
    s.stack.node("freeze", i)
    s.sleep_since_fault(DOWN_SECS)
    s.stack.node("thaw", i)
    s.fault_ends("SIGCONT %s" % s.stack.node_name(i))
    s.settle_bound = THAW_SETTLE


def instances(s):
    """kill -9 one instance of each service; the other ones carry on alone."""
    o, inv = s.orders_svc[0], s.inventory_svc[0]
    s.fault_begins("kill -9 %s (pid %d) and %s (pid %d)" % (o.name, o.pid, inv.name, inv.pid))
    o.kill9()
    inv.kill9()
    o.forget()
    inv.forget()
    s.early = {0}   # posts in flight to the killed order-service instance
    s.fault_ends()


def whole_cluster(s):
    """kill -9 all three nodes, restart them."""
    s.fault_begins("kill -9 n1, n2 and n3")
    s.stack.nats_kill()
    s.say("killed (+%.1f s)" % (proc.now() - s.t_fault))
    s.sleep_since_fault(RESTART_SECS)
    s.stack.nats_start()
    s.fault_ends("n1, n2, n3 restarted")


SCENARIOS = {"ha-stream-leader": stream_leader, "ha-meta-leader": meta_leader,
             "ha-freeze": freeze, "ha-instances": instances, "ha-cluster": whole_cluster}
# What `make test` runs: all of them, in one cluster start. The whole-cluster
# kill -9 comes first, while the streams hold no earlier scenario's
# messages: nats-server 2.9.10 can bring purged messages back after one
# (seen at the end of the list, with every replica current after the purge:
# 9 of the previous scenario's events applied again by the fresh databases).
DEFAULT = ["ha-cluster", "ha-stream-leader", "ha-meta-leader", "ha-freeze", "ha-instances"]


def main(argv):
    names = pick(argv, SCENARIOS, DEFAULT, "e2e HA")
    if names is None:
        return 2
    base = os.environ.get("ITEST_TMP") or tempfile.gettempdir()
    work = tempfile.mkdtemp(prefix="e2e-ha.", dir=base)
    os.chmod(work, 0o755)
    seed = int(os.environ.get("E2E_SEED") or int(time.time()) % 100000)
    # 2 posters pausing 0.25 s: about 8 orders/s, so that the orders posted
    # between the fault and recovery span its first 10 s or so.
    cfg = Settings(orders=int(os.environ.get("HA_ORDERS", "160")), seed=seed, parallel=2, pace=0.25,
                   settle_secs=int(os.environ.get("E2E_SETTLE_SECS", "90")),
                   env={"JS_REPLICAS": "3"}, label="e2e HA scenario")
    stack = Stack(os.environ.get("HA_STACK_DIR") or os.path.join(work, "stack"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    t0 = proc.now()
    results, times = [], []
    try:
        print("e2e HA: starting a 3-node JetStream cluster in %s" % stack.dir, flush=True)
        stack.up(nodes=3)
        print("e2e HA: %d scenario(s), %d orders each over 2 order-service instances, "
              "2 inventory-service instances, JS_REPLICAS=3, seed %d; logs in %s"
              % (len(names), cfg.orders, seed, work), flush=True)
        for k, name in enumerate(names, 1):
            s = Scenario(name, k, stack, work, cfg)
            results.append(s.run(SCENARIOS[name]))
            times.append((name, s.fault_to_settled, s.undone_to_settled))
    except KeyboardInterrupt:
        print("e2e HA: interrupted")
    finally:
        services.stop_all()
        if stack.owned:
            if not all(results) or len(results) < len(names):
                stack.keep_logs(work)
            stack.down()
    print("\ne2e HA: the orders posted before recovery: fault -> last settled (s), "
          "fault's end -> last settled (s):")
    for name, a, b in times:
        print("    %-18s %s  %s" % (name, "%6.1f" % a if a is not None else "     -",
                                    "%6.1f" % b if b is not None else "     -"))
    passed = sum(results)
    print("e2e HA: took %.1f s\n%d passed, %d failed" % (proc.now() - t0, passed, len(names) - passed))
    return 0 if passed == len(names) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
