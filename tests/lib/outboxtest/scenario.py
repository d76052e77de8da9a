"""One end-to-end scenario: a clean slate (both databases emptied, both
streams deleted), N instances of each service, seeded stock, orders posted
concurrently over every order-service instance, a fault injected a quarter
of the way in, the last quarter posted after recovery, a bounded wait until
everything settled, then every check of checks.py and a report.

A fault is a function of the scenario: it calls s.fault_begins() when it
strikes, s.fault_ends() when it is undone (the node restarted, thawed...),
and returns; the scenario then waits for every live instance's /readyz.
A fault function may carry two attributes: prepare(s), run before the
instances start (e.g. to set their FAILPOINTS in s.env_of), and
at_start = True to strike as the load begins rather than a quarter in."""
import os
import threading
import traceback

from . import checks, cluster, jsapi, load, proc
from .services import Service, http
from .stack import REPO


def pick(argv, scenarios, default, label):
    """The scenario names asked for (DEFAULT if none), or None after printing
    why not (an unknown name, or the release binaries missing)."""
    names = argv[1:] or default
    unknown = [n for n in names if n not in scenarios]
    if unknown:
        print("%s: unknown scenario(s) %s (known: %s)" % (label, " ".join(unknown), " ".join(scenarios)))
        return None
    for kind in ("order", "inventory"):
        if not os.access(os.path.join(REPO, "bin", kind + "-service"), os.X_OK):
            print("%s: bin/%s-service missing: run make all" % (label, kind))
            return None
    return names


class Settings:
    def __init__(self, **kw):
        self.orders = 160        # orders per scenario
        self.parallel = 8        # posts at a time
        self.pace = 0.1          # each poster's pause between two posts (s)
        self.settle_secs = 90    # settled within this after recovery
        self.label = "e2e scenario"
        self.seed = 1
        self.instances = 2       # of each service
        self.env = {}            # for every instance (JS_REPLICAS...)
        self.__dict__.update(kw)


class Scenario:
    def __init__(self, name, index, stack, workdir, settings):
        self.name, self.index, self.stack, self.cfg = name, index, stack, settings
        self.dir = os.path.join(workdir, "%d-%s" % (index, name))
        os.makedirs(self.dir, exist_ok=True)
        self.problems, self.notes = [], []
        self.orders_svc, self.inventory_svc = [], []
        self.t_fault = self.t_undone = self.t_recovered = None
        self.early = set()       # POST codes allowed before recovery
        self.fault_to_settled = self.undone_to_settled = None
        self.settle_bound = None  # if set: settled within this many s of the fault's end
        self.recovered_ev = threading.Event()
        self.env_of = {"order": {}, "inventory": {}}  # per kind, on top of settings.env
        self.orders = []

    # ------------------------------------------------------------ helpers for faults
    def say(self, text):
        print("    " + text, flush=True)

    def leaders(self):
        return cluster.leaders(self.stack)

    def node_of(self, name):
        """"n2" -> 2."""
        return cluster.node_index(self.stack, name)

    def fault_begins(self, what):
        self.t_fault = proc.now()
        self.say("fault: %s" % what)

    def fault_ends(self, what=""):
        self.t_undone = proc.now()
        if what:
            self.say("%s (+%.1f s)" % (what, self.t_undone - self.t_fault))

    def colocate(self, group, tries=40):
        """Gets every instance of GROUP connected to one node (clients pick a node
        at random): restarts the others until they land on the first one's node.
        Returns that node, or None (and a problem). With three nodes, 12 tries
        missed about once in 130 runs ((2/3)^12; it happened); 40 miss about
        once in ten million, and the usual three take about a second each."""
        def node(svc):
            return proc.wait_until(lambda: cluster.node_of(self.stack, svc.pid), 5, 0.2)
        target = node(group[0])
        for svc in group[1:]:
            for _ in range(tries):
                at = node(svc)
                if at == target:
                    break
                svc.stop()
                svc.start()
                svc.wait_ready()
        held = {svc.name: node(svc) for svc in group}
        self.say("NATS connections: %s" % ", ".join(
            "%s on %s" % (k, self.stack.node_name(v) if v is not None else "?") for k, v in held.items()))
        if target is None or set(held.values()) != {target}:
            self.problems.append("could not get %s onto one node (/connz): %s" % (
                " and ".join(held), held))
            return None
        return target

    def expect_unready(self, dep, within=5):
        """order-service's /readyz says 503 with DEP down within WITHIN seconds."""
        last = [None, ""]

        def down():
            last[:] = http("GET", self.orders_svc[0].url + "/readyz", timeout=3)
            return last[0] == 503 and '"%s":"down"' % dep in last[1]
        if not proc.wait_until(down, within, 0.1):
            self.problems.append("%s /readyz did not say 503 with %s down within %d s (last: %s %s)"
                                 % (self.orders_svc[0].name, dep, within, last[0], last[1][:200]))

    def answered_during(self, code):
        """How many posts ended with CODE while the fault lasted."""
        return sum(1 for o in self.orders if o.code == code and o.t1 is not None
                   and self.t_fault <= o.t1 <= (self.t_undone or proc.now()))

    def sleep_since_fault(self, secs):
        proc.wait_until(lambda: proc.now() - self.t_fault >= secs, secs + 1, 0.1)

    @property
    def services(self):
        return self.orders_svc + self.inventory_svc

    # ------------------------------------------------------------ set-up
    def wait_cluster_healthy(self, timeout=120):
        """Every node has JetStream enabled and knows the same meta leader (the
        streams are deleted next: whether a replica caught up does not matter)."""
        def healthy():
            if not all(http("GET", self.stack.node_monitor_url(i) + "/healthz?js-enabled-only=true",
                            timeout=2)[0] == 200 for i in self.stack.nodes):
                return False
            if self.stack.nodes == [0]:
                return True
            metas = {((cluster.jsz(self.stack, i) or {}).get("meta_cluster") or {}).get("leader")
                     for i in self.stack.nodes}
            return len(metas) == 1 and None not in metas and "" not in metas
        if not proc.wait_until(healthy, timeout, 0.5):
            self.problems.append("the NATS cluster was not healthy within %ds" % timeout)
            return False
        return True

    def reset(self):
        """Both databases emptied, both streams purged: a clean slate on a
        cluster that keeps its history, as a production one would. The
        streams are purged, not deleted: after a stream is deleted and made
        again under the same name, nats-server 2.9.10 can leave it without a
        leader for good after a whole-cluster restart ("detected duplicate
        assignment"), which no client can repair (README, "Running it highly
        available")."""
        for db in ("orders", "inventory"):
            checks.sql(self.stack.pg_url(db), "DROP SCHEMA public CASCADE; CREATE SCHEMA public")

        existing = []

        def purged():
            try:
                with jsapi.Nats(self.stack.nats_url, timeout=5) as n:
                    existing[:] = [st for st in ("ORDERS", "INVENTORY") if jsapi.purge_stream(n, st)]
                return True
            except (OSError, jsapi.NatsError, ValueError):
                return False
        if not proc.wait_until(purged, 30, 1):
            raise RuntimeError("could not purge the streams")
        # Every replica must have applied the purge before a fault: once, a
        # whole-cluster kill -9 five seconds after it brought the purged
        # messages back (nats-server 2.9.10), and the fresh databases took
        # the previous scenario's events for this one's.
        if not proc.wait_until(lambda: cluster.streams_settled(self.stack, existing), 30, 0.2):
            raise RuntimeError("the purged streams did not settle on every replica")

    def start_services(self):
        env = dict(self.cfg.env, NATS_URL=self.stack.nats_url, LOG_LEVEL="info", RELAY_SWEEP_MS="100")
        taken = set(self.stack.ports())
        for kind, group in (("order", self.orders_svc), ("inventory", self.inventory_svc)):
            for k in range(1, self.cfg.instances + 1):
                svc = Service(kind, "%s-%d" % (kind, k), self.dir,
                              dict(env, DATABASE_URL=self.stack.pg_url("orders" if kind == "order" else "inventory"),
                                   **self.env_of[kind]), self.problems)
                group.append(svc)
                if not svc.start(taken):
                    return False
                taken.add(svc.port)
        return all(s.wait_ready() for s in self.services)

    def seed_stock(self):
        for sku, n in load.SEEDED.items():
            code, text = http("PUT", "%s/inventory/%s" % (self.inventory_svc[0].url, sku), {"available": n})
            if code != 200:
                self.problems.append("PUT /inventory/%s answered %s %s" % (sku, code, text[:200]))
                return False
        return True

    def live_order_urls(self):
        live = [s.url for s in self.orders_svc if s.alive()]
        return live or [s.url for s in self.orders_svc]

    def recover(self):
        """Every instance still meant to run answers /readyz 200; the last orders go."""
        ok = all(s.wait_ready() for s in self.services if s.popen is not None)
        self.t_recovered = proc.now()
        self.recovered_ev.set()
        return ok

    # ------------------------------------------------------------ the run
    def run(self, fault):
        print("\n=== %s %d: %s" % (self.cfg.label, self.index, self.name), flush=True)
        t0 = proc.now()
        cfg = self.cfg
        orders = self.orders = load.gen_orders(cfg.orders, cfg.seed + self.index)
        ck = checks.Checks(self.stack, orders, self.problems, self.notes)
        settled_in = None
        try:
            if getattr(fault, "prepare", None):
                fault.prepare(self)
            if (self.wait_cluster_healthy() and self.reset() is None and self.start_services()
                    and self.seed_stock()):
                self.say("instances: " + ", ".join("%s :%d" % (s.name, s.port) for s in self.services))
                quarter, gate = cfg.orders // 4, cfg.orders - cfg.orders // 4
                poster = load.Poster(orders, self.live_order_urls, cfg.parallel, gate, cfg.pace,
                                     self.recovered_ev).start()
                if not getattr(fault, "at_start", False):
                    poster.wait_done(quarter, 60)
                fault(self)
                if self.t_undone is None:
                    self.t_undone = proc.now()
                self.recover()
                if not poster.join(load.GATE_WAIT + load.POST_TIMEOUT + 10):
                    self.problems.append("posting did not finish")
                settled_in = ck.wait_settled(cfg.settle_secs)
                ck.codes(self.early, self.t_recovered)
                live_o = [s for s in self.orders_svc if s.alive()]
                live_i = [s for s in self.inventory_svc if s.alive()]
                ck.orders_http(live_o[0].url)
                ck.stock(live_i[0].url)
                ck.databases()
                ck.jetstream([s.log for s in self.orders_svc])
                if getattr(fault, "after", None):
                    fault.after(self)
                self.report_times(ck, orders, settled_in)
        except Exception:  # a bug of the test itself: reported, the next scenario runs
            self.problems.append("the scenario raised:\n" + traceback.format_exc())
        self.recovered_ev.set()
        for s in self.services:
            s.stop()
        self.say("scenario took %.1f s" % (proc.now() - t0))
        return self.verdict()

    def report_times(self, ck, orders, settled_in):
        acc = ck.accepted()
        codes = {}
        for o in orders:
            codes[o.code] = codes.get(o.code, 0) + 1
        self.say("orders posted %d, accepted (201) %d, CONFIRMED %d, REJECTED %d; answers: %s" % (
            len(orders), len(acc), ck.confirmed, ck.rejected,
            " ".join("%s x%d" % (c, n) for c, n in sorted(codes.items(), key=lambda x: str(x[0])))))
        # The orders posted before recovery (those the fault hit): when the last of them settled.
        last = ck.last_settled_at(before=self.t_recovered)
        if last and self.t_fault:
            self.fault_to_settled = last - self.t_fault
            self.undone_to_settled = last - self.t_undone
            self.say("fault -> last order posted before recovery settled: %.1f s (%+.1f s from the "
                     "fault's end); everything settled and acknowledged %s after the last post" % (
                         self.fault_to_settled, self.undone_to_settled,
                         "%.1f s" % settled_in if settled_in is not None else "never"))
            if self.settle_bound is not None and self.undone_to_settled > self.settle_bound:
                self.problems.append("the orders posted before recovery settled %.1f s after the fault's "
                                     "end (within %d s expected)" % (self.undone_to_settled, self.settle_bound))

    def verdict(self):
        for n in self.notes:
            self.say("note: " + n)
        if not self.problems:
            print("--- PASS %s" % self.name, flush=True)
            return True
        print("--- FAIL %s (seed %d)" % (self.name, self.cfg.seed + self.index), flush=True)
        for p in self.problems:
            self.say("* " + p)
        for s in self.services:
            self.say("--- last lines of %s's log (%s)" % (s.name, s.log))
            for line in s.tail(12):
                self.say("    " + line)
        return False
