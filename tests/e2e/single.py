"""The end-to-end chaos test on one nats-server: what nothing may break
(CONTRACT.md), checked from outside while processes die. Run through
tests/e2e/run (see there for the scenarios and knobs)."""
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from outboxtest import proc, services  # noqa: E402
from outboxtest.scenario import Scenario, Settings, pick  # noqa: E402
from outboxtest.stack import Stack  # noqa: E402

FAULT_SECS = 3       # NATS / Postgres outage
DEAD_SECS = 2        # a killed service stays down this long
FAILPOINT_SECS = 45  # every armed crash point fires within this


def outage(what, stop, start, dep, code):
    """WHAT is stopped (STOP(stack)) for FAULT_SECS: /readyz says 503 with DEP
    down meanwhile, and some POST /orders is answered CODE during the outage."""
    def fault(s):
        if code == 503:
            s.early = {503}
        s.fault_begins("%s stopped" % what)
        stop(s.stack)
        s.expect_unready(dep)
        s.sleep_since_fault(FAULT_SECS)
        start(s.stack)
        s.fault_ends("%s started" % what)
        if not s.answered_during(code):
            s.problems.append("no POST /orders answered %d while %s was stopped: the fault window "
                              "missed the load" % (code, what))
    return fault


# kill -9 nats-server: orders still accepted; restarted on the same store.
nats = outage("nats-server (kill -9)", lambda st: st.nats_kill(), lambda st: st.nats_start(), "nats", 201)
# Postgres stopped: 503 meanwhile, nothing half-written.
postgres = outage("Postgres", lambda st: st.pg_stop(), lambda st: st.pg_start(), "postgres", 503)


def kill(kind):
    def fault(s):
        svc = (s.orders_svc if kind == "order" else s.inventory_svc)[0]
        s.fault_begins("kill -9 %s (pid %d)" % (svc.name, svc.pid))
        svc.kill9()
        s.sleep_since_fault(DEAD_SECS)
        svc.start()
        s.fault_ends("%s restarted" % svc.name)
        if kind == "order":
            s.early = {0, 503}   # posts while it was dead or starting
    fault.__doc__ = "kill -9 %s-service, restarted %d s later" % (kind, DEAD_SECS)
    return fault


def failpoints(plan):
    """PLAN: {kind: [failpoints of its successive lives]}; each instance is
    restarted with the next one as soon as it died of the current one, and
    without any at the end."""
    def prepare(s):
        s.fp_left = {k: list(v) for k, v in plan.items()}
        for kind, fps in plan.items():
            s.env_of[kind] = {"FAILPOINTS": fps[0]}
        if "order" in plan:
            s.early = {0, 503}

    def fault(s):
        s.fault_begins("crash points armed: %s" % plan)
        deadline = time.monotonic() + FAILPOINT_SECS
        while any(s.fp_left.values()):
            for kind, left in s.fp_left.items():
                svc = (s.orders_svc if kind == "order" else s.inventory_svc)[0]
                if not left or svc.alive():
                    continue
                cur = left.pop(0)
                if "failpoint %s: killing the process" % cur.split(":")[0] not in svc.life_log():
                    s.problems.append("%s died, but not at its failpoint %s" % (svc.name, cur))
                s.say("%s died at %s (+%.1f s)" % (svc.name, cur, proc.now() - s.t_fault))
                svc.env.pop("FAILPOINTS", None)
                if left:
                    svc.env["FAILPOINTS"] = left[0]
                svc.start()
            if time.monotonic() > deadline:
                s.problems.append("failpoints that did not fire within %d s: %s" % (FAILPOINT_SECS, s.fp_left))
                break
            time.sleep(0.05)
        s.fault_ends()

    def after(s):
        """A crash between commit and ack: the next life saw the batch again as duplicates."""
        for kind, fps in plan.items():
            if not any(f.startswith("inbox_after_commit") for f in fps):
                continue
            svc = (s.orders_svc if kind == "order" else s.inventory_svc)[0]
            key = ('order_replies_total{result="duplicate"}' if kind == "order"
                   else 'inventory_messages_total{result="duplicate"}')
            n = svc.metric(key)
            s.say("%s, after its crash at inbox_after_commit: %s = %s" % (svc.name, key, n))
            if not n:
                s.problems.append("%s crashed between commit and ack, yet its next life counted no "
                                  "duplicate (%s = %s)" % (svc.name, key, n))
    fault.prepare, fault.at_start, fault.after = prepare, True, after
    return fault


SCENARIOS = {
    "nats": nats, "inventory": kill("inventory"), "order": kill("order"), "postgres": postgres,
    "failpoints": failpoints({"order": ["relay_after_ack:3", "inbox_after_commit:3"],
                              "inventory": ["inbox_after_commit:3"]}),
    "fp-relay": failpoints({"order": ["relay_after_ack:3"]}),
    "fp-inventory": failpoints({"inventory": ["inbox_after_commit:3"]}),
    "fp-order": failpoints({"order": ["inbox_after_commit:3"]}),
}
DEFAULT = ["nats", "inventory", "order", "postgres", "failpoints"]


def main(argv):
    names = pick(argv, SCENARIOS, DEFAULT, "e2e")
    if names is None:
        return 2
    work = tempfile.mkdtemp(prefix="e2e.", dir=os.environ.get("ITEST_TMP") or tempfile.gettempdir())
    os.chmod(work, 0o755)
    env = os.environ.get
    cfg = Settings(orders=int(env("E2E_ORDERS", "300")), parallel=int(env("E2E_PARALLEL", "16")),
                   pace=float(env("E2E_PACE", "1.0")), settle_secs=int(env("E2E_SETTLE_SECS", "60")),
                   seed=int(env("E2E_SEED") or int(time.time()) % 1000000), instances=1)
    stack = Stack(env("STACK_DIR") or os.path.join(work, "stack"))
    t0 = proc.now()
    results = []
    try:
        if env("STACK_DIR"):
            stack.load()
        else:
            print("e2e: starting a local stack in %s" % stack.dir, flush=True)
            stack.up()
        print("e2e: %d scenario(s), %d orders each (%d at a time), seed %d; logs in %s"
              % (len(names), cfg.orders, cfg.parallel, cfg.seed, work), flush=True)
        for k, name in enumerate(names, 1):
            results.append(Scenario(name, k, stack, work, cfg).run(SCENARIOS[name]))
    except KeyboardInterrupt:
        print("e2e: interrupted")
    finally:
        services.stop_all()
        if stack.owned:
            stack.down()
        elif stack.env:   # leave the caller's stack as found, even after a failure mid-fault
            for start in (stack.pg_start, stack.nats_start):
                try:
                    start()
                except Exception as e:  # noqa: BLE001 (reported, not fatal)
                    print("e2e: %s" % e)
    passed = sum(results)
    print("\ne2e: took %.1f s\n%d passed, %d failed" % (proc.now() - t0, passed, len(names) - passed))
    return 0 if passed == len(names) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
