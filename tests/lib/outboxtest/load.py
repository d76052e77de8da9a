"""The orders of a scenario and the concurrent poster.

Orders are deterministic for a seed: mostly servable single items, some
two-item orders (all-or-nothing), a few unknown SKUs (alone or beside a known
one) and a few asking more than the whole stock."""
import json
import random
import threading
import time
import urllib.error
import urllib.request

from . import proc

SEEDED = {"SKU-1": 1000, "SKU-2": 400, "SKU-3": 150, "SKU-4": 60, "SKU-5": 20}
UNKNOWN_SKU = "SKU-NOPE"
HUGE_QTY = 5000  # more than any SKU is ever seeded with
POST_TIMEOUT = 20
GATE_WAIT = 90   # the last orders wait at most this long for recovery


class Order:
    def __init__(self, i, items, cls):
        self.i, self.items, self.cls = i, items, cls  # items: [(sku, qty)]
        self.code = None      # HTTP status of the POST (0: no answer)
        self.id = None        # from a 201
        self.url = None       # the instance it was posted to
        self.t0 = self.t1 = None

    def body(self):
        return {"customer_id": "e2e-%d" % (self.i % 7),
                "items": [{"sku": s, "qty": q} for s, q in self.items]}


def gen_orders(n, seed):
    rnd = random.Random(seed)
    skus = sorted(SEEDED)
    out = []
    for i in range(n):
        r = rnd.randrange(100)
        a, b = rnd.sample(skus, 2)
        qa, qb = rnd.randint(1, 4), rnd.randint(1, 3)
        if r < 3:
            items, cls = [(UNKNOWN_SKU, 1)], "unknown"
        elif r < 6:
            items, cls = [(a, qa), (UNKNOWN_SKU, 1)], "unknown-mixed"
        elif r < 9:
            items, cls = [(a, HUGE_QTY)], "huge"
        elif r < 24:
            items, cls = [(a, qa), (b, qb)], "normal"
        else:
            items, cls = [(a, qa)], "normal"
        out.append(Order(i, items, cls))
    return out


def post_order(url, order):
    req = urllib.request.Request(url + "/orders", data=json.dumps(order.body()).encode(),
                                 method="POST", headers={"Content-Type": "application/json"})
    order.url, order.t0 = url, proc.now()
    try:
        with urllib.request.urlopen(req, timeout=POST_TIMEOUT) as r:
            order.code, text = r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        order.code, text = e.code, ""
    except (OSError, ValueError):
        order.code, text = 0, ""
    order.t1 = proc.now()
    if order.code == 201:
        try:
            order.id = json.loads(text)["id"]
        except (ValueError, KeyError, TypeError):
            order.id = None


class Poster:
    """Posts every order, PARALLEL at a time, spread round-robin over the
    order-service URLs (a callable returning the current list), each worker
    pausing PACE seconds between two posts. Orders from index GATE on wait
    for recovered (a threading.Event) first."""

    def __init__(self, orders, urls, parallel, gate, pace, recovered):
        self.orders, self.urls, self.gate, self.pace = orders, urls, gate, pace
        self.recovered = recovered
        self.next = 0
        self.done = 0
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._work, daemon=True) for _ in range(parallel)]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def _work(self):
        while True:
            with self.lock:
                i = self.next
                self.next += 1
            if i >= len(self.orders):
                return
            if i >= self.gate:
                self.recovered.wait(GATE_WAIT)
            urls = self.urls()
            post_order(urls[i % len(urls)], self.orders[i])
            with self.lock:
                self.done += 1
            time.sleep(self.pace)

    def wait_done(self, n, timeout):
        return proc.wait_until(lambda: self.done >= n, timeout, 0.05)

    def join(self, timeout):
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self.threads)
