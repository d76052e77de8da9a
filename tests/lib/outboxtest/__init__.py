"""outboxtest - the end-to-end test library of the outbox reference system.

Python 3 standard library only (Debian's python3). Its modules:
  proc      free loopback ports, bounded waits, processes by PID
  stack     scripts/stack: Postgres and one nats-server or a 3-node cluster
  cluster   the NATS monitoring endpoints: leaders, which node holds a connection
  jsapi     a minimal NATS client for JetStream API requests (stream/consumer info)
  services  order-service and inventory-service instances (start, kill -9, restart)
  load      the orders of a scenario and the concurrent poster
  checks    the invariants of CONTRACT.md, checked from outside
  scenario  one scenario: clean slate, instances, load, fault, settle, checks, report

A scenario is a short function on top of these (tests/e2e/ha.py).
"""
