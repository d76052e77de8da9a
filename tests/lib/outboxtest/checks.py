"""The invariants of CONTRACT.md ("what nothing may break"), checked from
outside: over HTTP, in both databases (psql) and in JetStream (its API, which
the stream and consumer leaders answer). Each check appends human-readable
problems to a list; an empty list is a pass."""
import json
import os
import subprocess
import time

from . import jsapi, load, proc
from .services import http

CONSUMERS = (("ORDERS", "inventory-service"), ("INVENTORY", "order-service"))
REDRIVE_LOG = "re-drive:"   # order-service's log line when it re-sends OrderCreated
ACK_STATE_SECS = 10         # how long the consumers' counts may take to reach zero


def sql(url, query):
    """Rows of a query, as tuples of strings (psql, unaligned, tab-separated)."""
    env = dict(os.environ, PGOPTIONS="-c client_min_messages=warning", PGCONNECT_TIMEOUT="5")
    r = subprocess.run(["psql", url, "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-F", "\t",
                        "-c", query], env=env, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError("psql: %s" % r.stderr.strip())
    return [tuple(line.split("\t")) for line in r.stdout.splitlines() if line]


def listed(problems, heading, lines, limit=15):
    """One problem: a heading and at most LIMIT of its lines."""
    lines = list(lines)
    if lines:
        problems.append("%s (%d):\n%s" % (heading, len(lines),
                                          "\n".join("        " + str(l) for l in lines[:limit])))


class Checks:
    def __init__(self, stack, orders, problems, notes):
        self.stack, self.orders = stack, orders
        self.problems, self.notes = problems, notes
        self.orders_db, self.inventory_db = stack.pg_url("orders"), stack.pg_url("inventory")

    # ------------------------------------------------------------ settling
    def js_pending(self):
        """'ORDERS:0/0, INVENTORY:0/0' (unacked/undelivered per consumer), or an error text."""
        try:
            return jsapi.ask_any(self.stack.nats_url, lambda n: ", ".join(
                "%s:%d/%d" % ((s,) + jsapi.consumer_state(n, s, d)[:2]) for s, d in CONSUMERS), 3)
        except (OSError, jsapi.NatsError, ValueError) as e:
            return "JetStream not answering (%s)" % e

    def js_detail(self):
        """Each stream's messages and sequences, and its consumer's delivered
        and acknowledged sequences: whether what is not settled is in the
        stream, and whether the consumer went past it."""
        def detail(n):
            out = []
            for s, d in CONSUMERS:
                st = jsapi.stream_state(n, s)
                delivered, floor = jsapi.consumer_floors(n, s, d)
                out.append("%s holds %d (sequences %d-%d), %s delivered to %d, ack floor %d"
                           % (s, st["messages"], st["first_seq"], st["last_seq"], d, delivered, floor))
            return "; ".join(out)
        try:
            return jsapi.ask_any(self.stack.nats_url, detail, 3)
        except (OSError, jsapi.NatsError, ValueError, KeyError) as e:
            return "JetStream not answering (%s)" % e

    def pending(self):
        """What is not settled yet: '' when every order is settled, both
        outboxes are drained and both consumers acknowledged everything."""
        try:
            o = sql(self.orders_db, "SELECT (SELECT count(*) FROM orders WHERE status = 'PENDING'),"
                    " (SELECT count(*) FROM outbox WHERE status = 'pending')")[0]
            i = sql(self.inventory_db, "SELECT count(*) FROM outbox WHERE status = 'pending'")[0]
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            return "databases not answering (%s)" % e
        js = self.js_pending()
        if o == ("0", "0") and i == ("0",) and js == "ORDERS:0/0, INVENTORY:0/0":
            return ""
        return ("orders PENDING %s, orders outbox pending %s, inventory outbox pending %s, "
                "consumers unacked/undelivered: %s" % (o[0], o[1], i[0], js))

    def wait_settled(self, timeout):
        """Seconds waited until settled, or None (and a problem)."""
        t0 = proc.now()
        last = [""]

        def settled():
            last[0] = self.pending()
            return last[0] == ""
        if proc.wait_until(settled, timeout, 0.3):
            return proc.now() - t0
        self.problems.append("not settled %ds after recovery: %s; %s" % (timeout, last[0], self.js_detail()))
        return None

    def last_settled_at(self, before=None):
        """Epoch seconds of the last order's settling (its updated_at); with
        BEFORE, of the orders whose POST started before that time only."""
        ids = None
        if before is not None:
            ids = [o.id for o in self.accepted() if o.t0 < before and o.id]
            if not ids:
                return None
        rows = sql(self.orders_db, "SELECT extract(epoch FROM max(updated_at)) FROM orders "
                   "WHERE status <> 'PENDING'" + (" AND id::text = ANY('{%s}')" % ",".join(ids) if ids else ""))
        return float(rows[0][0]) if rows and rows[0][0] else None

    # ------------------------------------------------------------ checks
    def accepted(self):
        return [o for o in self.orders if o.code == 201]

    def codes(self, early, recovered_at):
        """Every POST answered 201, or a code of EARLY if it started before recovery."""
        bad, late = [], []
        for o in self.orders:
            if o.code == 201:
                if not o.id:
                    bad.append("#%d: 201 without an id" % o.i)
                continue
            if o.code in early and (recovered_at is None or o.t0 < recovered_at):
                continue
            (late if o.code in early else bad).append("#%d: %s (%s)" % (o.i, o.code, o.url))
        listed(self.problems, "unexpected answers to POST /orders (allowed: 201%s)" % (
            ", and %s before recovery" % sorted(early) if early else ""), bad)
        listed(self.problems, "answers other than 201 to POST /orders started after recovery", late)

    def orders_http(self, url):
        """GET /orders/<id> of every 201: settled, with its items, the expected reason."""
        bad = []
        self.confirmed = self.rejected = 0
        for o in self.accepted():
            code, text = http("GET", "%s/orders/%s" % (url, o.id), timeout=10)
            try:
                got = json.loads(text) if code == 200 else {}
            except ValueError:
                got = {}
            st, reason = got.get("status"), got.get("reason")
            items = [(it.get("sku"), it.get("qty")) for it in got.get("items") or []]
            want = [(s, q) for s, q in o.items]
            err = None
            if code != 200:
                err = "GET answered %s %s" % (code, text[:200])
            elif st not in ("CONFIRMED", "REJECTED"):
                err = "status %s" % st
            elif items != want:
                err = "items %s, posted %s" % (items, want)
            elif st == "REJECTED" and reason not in ("insufficient_stock", "unknown_sku"):
                err = "REJECTED with reason %r" % reason
            elif st == "CONFIRMED" and reason:
                err = "CONFIRMED with reason %r" % reason
            elif o.cls == "unknown" and (st, reason) != ("REJECTED", "unknown_sku"):
                err = "%s/%s for an unknown sku (REJECTED/unknown_sku expected)" % (st, reason)
            elif o.cls == "unknown-mixed" and st != "REJECTED":
                err = "%s with an unknown sku (REJECTED expected)" % st
            elif o.cls == "huge" and (st, reason) != ("REJECTED", "insufficient_stock"):
                err = "%s/%s for more than ever seeded (REJECTED/insufficient_stock expected)" % (st, reason)
            if st == "CONFIRMED":
                self.confirmed += 1
            elif st == "REJECTED":
                self.rejected += 1
            if err:
                bad.append("#%d %s: %s" % (o.i, o.id, err))
        listed(self.problems, "orders answered 201 that are wrong", bad)

    def stock(self, url):
        """Books exact: available + reserved = seeded; reserved = the CONFIRMED orders' quantities."""
        conf = dict(sql(self.orders_db, "SELECT i.sku, sum(i.qty) FROM orders o JOIN order_items i"
                        " ON i.order_id = o.id WHERE o.status = 'CONFIRMED' GROUP BY 1"))
        bad = []
        for sku, seeded in sorted(load.SEEDED.items()):
            code, text = http("GET", "%s/inventory/%s" % (url, sku))
            try:
                got = json.loads(text)
                avail, res = int(got["available"]), int(got["reserved"])
            except (ValueError, KeyError, TypeError):
                bad.append("%s: GET answered %s %s" % (sku, code, text[:200]))
                continue
            if avail + res != seeded:
                bad.append("%s: available %d + reserved %d = %d, seeded %d" % (sku, avail, res, avail + res, seeded))
            elif res != int(conf.get(sku, 0)):
                bad.append("%s: reserved %d, but the CONFIRMED orders hold %s" % (sku, res, conf.get(sku, 0)))
        code, _ = http("GET", "%s/inventory/%s" % (url, load.UNKNOWN_SKU))
        if code != 404:
            bad.append("%s: never seeded, GET answered %s (404 expected)" % (load.UNKNOWN_SKU, code))
        listed(self.problems, "stock that does not add up", bad)

    def databases(self):
        """Cross-database and exactly-once checks, in SQL."""
        o_db, i_db, p = self.orders_db, self.inventory_db, self.problems
        ids = {r[0] for r in sql(o_db, "SELECT id FROM orders")}
        self.n_orders = len(ids)
        listed(p, "orders answered 201 but not in the orders database",
               [o.id for o in self.accepted() if o.id not in ids])
        listed(p, "orders without items or without exactly one outbox event", sql(o_db,
               "SELECT o.id, (SELECT count(*) FROM order_items i WHERE i.order_id = o.id) AS items,"
               " (SELECT count(*) FROM outbox_events x WHERE x.payload::json->>'order_id' = o.id::text) AS events"
               " FROM orders o WHERE NOT EXISTS (SELECT 1 FROM order_items i WHERE i.order_id = o.id)"
               " OR (SELECT count(*) FROM outbox_events x WHERE x.payload::json->>'order_id' = o.id::text) <> 1"))
        listed(p, "orders outbox events of no order", sql(o_db,
               "SELECT event_id, payload::json->>'order_id' FROM outbox_events x WHERE NOT EXISTS"
               " (SELECT 1 FROM orders o WHERE o.id::text = x.payload::json->>'order_id')"))
        want = set(sql(o_db, "SELECT o.id, i.sku, i.qty FROM orders o JOIN order_items i"
                   " ON i.order_id = o.id WHERE o.status = 'CONFIRMED'"))
        have = sql(i_db, "SELECT order_id, sku, qty FROM reservations")
        listed(p, "reservations that differ from the CONFIRMED orders' items (one per item)",
               ["CONFIRMED item not reserved: %s" % (r,) for r in sorted(want - set(have))] +
               ["reserved but not a CONFIRMED item: %s" % (r,) for r in sorted(set(have) - want)] +
               ["reserved more than once: %s" % (r,) for r in sorted({r for r in have if have.count(r) > 1})])
        want = set(sql(o_db, "SELECT id, CASE status WHEN 'CONFIRMED' THEN 'InventoryReserved'"
                   " WHEN 'REJECTED' THEN 'InventoryRejected' ELSE 'none-yet(' || status || ')' END FROM orders"))
        have = sql(i_db, "SELECT payload::json->>'order_id', event_type FROM outbox_events")
        listed(p, "inventory replies that differ from one per order matching its status",
               ["order (status as reply): %s" % (r,) for r in sorted(want - set(have))] +
               ["inventory reply: %s" % (r,) for r in sorted(set(have) - want)] +
               ["more than one reply: %s" % (r,) for r in sorted({r for r in have if have.count(r) > 1})])
        for a_db, b_db, what in ((o_db, i_db, "inventory processed ids vs the OrderCreated events"),
                                 (i_db, o_db, "order-service processed ids vs the inventory replies")):
            a = [r[0] for r in sql(a_db, "SELECT event_id FROM outbox_events")]
            b = [r[0] for r in sql(b_db, "SELECT event_id FROM processed_messages")]
            listed(p, what + " (every event applied once)",
                   ["not processed: %s" % e for e in sorted(set(a) - set(b))] +
                   ["processed, not an event: %s" % e for e in sorted(set(b) - set(a))] +
                   ["processed twice: %s" % e for e in sorted({e for e in b if b.count(e) > 1})])
        for db, name in ((o_db, "orders"), (i_db, "inventory")):
            listed(p, "%s database: outbox rows not published / dead letters" % name, sql(db,
                   "SELECT 'outbox ' || status, count(*) FROM outbox WHERE status <> 'published' GROUP BY 1"
                   " UNION ALL SELECT 'dead_letters', count(*) FROM dead_letters HAVING count(*) > 0"))

    @staticmethod
    def applied(producer_db, consumer_db):
        """How many of producer_db's events consumer_db has recorded as processed."""
        ids = {r[0] for r in sql(producer_db, "SELECT event_id FROM outbox_events")}
        return len(ids & {r[0] for r in sql(consumer_db, "SELECT event_id FROM processed_messages")})

    def jetstream(self, order_logs):
        """Both durable consumers fully acknowledged; each stream holds at
        least one message per event, exactly one unless a re-drive (the
        broker lost messages) re-sent some: that is printed, not failed."""
        events = {"ORDERS": sql(self.orders_db, "SELECT count(*) FROM outbox_events")[0][0],
                  "INVENTORY": sql(self.inventory_db, "SELECT count(*) FROM outbox_events")[0][0]}
        # events whose consumer has applied them (its processed ids)
        applied = {"ORDERS": self.applied(self.orders_db, self.inventory_db),
                   "INVENTORY": self.applied(self.inventory_db, self.orders_db)}
        redriven = sum(1 for log in order_logs for line in open(log, errors="replace")
                       if REDRIVE_LOG in line)

        def state(n):
            return {s: (jsapi.stream_state(n, s)["messages"],) + jsapi.consumer_state(n, s, d)
                    for s, d in CONSUMERS}

        def drained(got):
            return all(not got[s][1] and not got[s][2] for s, _ in CONSUMERS)
        try:
            # A consumer's counts can trail its last ack by a moment (the
            # leader that answers applies the acks of its replicas' log): ask
            # again for a little while before calling them wrong.
            deadline = proc.now() + ACK_STATE_SECS
            got = jsapi.ask_any(self.stack.nats_url, state)
            while not drained(got) and proc.now() < deadline:
                time.sleep(0.5)
                got = jsapi.ask_any(self.stack.nats_url, state)
            for stream, durable in CONSUMERS:
                msgs, ackp, pend, redl = got[stream]
                want = int(events[stream])
                if msgs < want and applied[stream] == want:
                    # nats-server 2.9.10 can lose acknowledged messages when
                    # every node is killed at once (shared/notes/cluster.md);
                    # these were consumed and applied before: nothing lost here
                    self.notes.append("stream %s holds %d messages for %d events: the broker lost %d "
                                      "after they were consumed (every event was applied)"
                                      % (stream, msgs, want, want - msgs))
                elif msgs < want:
                    self.problems.append("stream %s holds %d messages for %d events (lost)" % (stream, msgs, want))
                elif msgs > want and redriven:
                    self.notes.append("stream %s holds %d messages for %d events: the broker lost some and "
                                      "%d re-drive sweep(s) re-sent them" % (stream, msgs, want, redriven))
                elif msgs > want:
                    self.problems.append("stream %s holds %d messages for %d events, and nothing was re-driven"
                                         % (stream, msgs, want))
                if ackp or pend:
                    self.problems.append("the durable consumer %s of %s has %d unacknowledged and %d "
                                         "undelivered messages" % (durable, stream, ackp, pend))
        except (OSError, jsapi.NatsError, ValueError) as e:
            self.problems.append("JetStream did not answer the checks: %s" % e)
        if redriven:
            self.notes.append("re-drive: order-service re-sent OrderCreated events in %d sweep(s) "
                              "(orders PENDING past REDRIVE_AFTER: the broker lost messages or was "
                              "unreachable that long)" % redriven)
