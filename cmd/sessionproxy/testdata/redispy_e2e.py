"""redis-py end-to-end checks against a running sessionproxy (run by TestRedisPy).

Usage: /usr/bin/python3 redispy_e2e.py HOST PORT

Prints "ok <check>" for each check that passes; on the first failure prints "FAIL <check>: why"
and exits 1. Every wait is bounded.
"""

import sys
import threading
import time

import redis

HOST, PORT = sys.argv[1], int(sys.argv[2])
PREFIX = "redispy:"


def client(db=0):
    return redis.Redis(host=HOST, port=PORT, db=db, socket_timeout=10, socket_connect_timeout=2)


def fail(name, why):
    print("FAIL %s: %s" % (name, why), flush=True)
    sys.exit(1)


def check(name, cond, why):
    if not cond:
        fail(name, why)


def eventually(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def blocked_clients(r):
    return r.info("clients")["blocked_clients"]


def test_basic():
    r = client()
    check("basic", r.set(PREFIX + "k", "v") is True, "SET")
    check("basic", r.get(PREFIX + "k") == b"v", "GET")
    check("basic", r.get(PREFIX + "missing") is None, "GET of a missing key")
    pipe = r.pipeline(transaction=False)
    for _ in range(1000):
        pipe.incr(PREFIX + "ctr")
    got = pipe.execute()
    check("basic", got == list(range(1, 1001)), "pipeline of 1000 INCR: %r..." % got[:5])


def test_pubsub():
    sub, pub = client(), client()
    ch = PREFIX + "chan"
    ps = sub.pubsub()
    ps.subscribe(ch)
    msg = ps.get_message(timeout=5)
    check("pubsub", msg is not None and msg["type"] == "subscribe", "no subscribe confirmation: %r" % msg)
    n = 100
    for i in range(n):
        receivers = pub.publish(ch, "m%d" % i)
        check("pubsub", receivers == 1, "PUBLISH %d reached %d receivers" % (i, receivers))
    for i in range(n):
        deadline = time.monotonic() + 5
        msg = None
        while msg is None and time.monotonic() < deadline:
            msg = ps.get_message(timeout=1)
        check("pubsub", msg is not None, "message %d not received within 5s" % i)
        check("pubsub", msg["type"] == "message" and msg["data"] == ("m%d" % i).encode(),
              "message %d out of order: %r" % (i, msg))
    ps.unsubscribe(ch)
    ps.close()
    check("pubsub", eventually(lambda: pub.publish(ch, "late") == 0), "still subscribed after UNSUBSCRIBE")


def test_blpop():
    waiter, pusher = client(), client()
    lst = PREFIX + "list"
    result = {}

    def wait():
        result["v"] = waiter.blpop(lst, timeout=10)
        result["at"] = time.monotonic()

    th = threading.Thread(target=wait, daemon=True)
    base = blocked_clients(pusher)
    th.start()
    check("blpop", eventually(lambda: blocked_clients(pusher) > base), "BLPOP never blocked in redis-server")
    pushed = time.monotonic()
    pusher.lpush(lst, "wake")
    th.join(5)
    check("blpop", not th.is_alive(), "BLPOP not woken within 5s of LPUSH")
    check("blpop", result.get("v") == (lst.encode(), b"wake"), "BLPOP returned %r" % (result.get("v"),))
    check("blpop", result["at"] - pushed < 2, "BLPOP woke %.2fs after LPUSH" % (result["at"] - pushed))
    check("blpop", waiter.llen(lst) == 0, "LLEN after BLPOP")


def test_watch_conflict():
    r1, r2 = client(), client()
    key = PREFIX + "watched"
    r1.set(key, 1)
    # No conflict: the transaction runs.
    with r1.pipeline() as pipe:
        pipe.watch(key)
        n = int(pipe.get(key))
        pipe.multi()
        pipe.set(key, n + 1)
        check("watch", pipe.execute() == [True], "EXEC without conflict")
    check("watch", r2.get(key) == b"2", "value after the transaction")
    # Another client writes the key between WATCH and EXEC.
    with r1.pipeline() as pipe:
        pipe.watch(key)
        n = int(pipe.get(key))
        r2.set(key, "other")
        pipe.multi()
        pipe.set(key, n + 1)
        try:
            pipe.execute()
            fail("watch", "EXEC succeeded despite the conflicting write")
        except redis.WatchError:
            pass
    check("watch", r2.get(key) == b"other", "value after the failed transaction: %r" % r2.get(key))


def test_two_dbs():
    db0, db4 = client(0), client(4)
    key = PREFIX + "dbkey"
    db0.set(key, "in-0")
    db4.set(key, "in-4")
    for i in range(20):
        check("two_dbs", db0.get(key) == b"in-0", "round %d: DB 0 sees %r" % (i, db0.get(key)))
        check("two_dbs", db4.get(key) == b"in-4", "round %d: DB 4 sees %r" % (i, db4.get(key)))
    db4.set(key + "only4", "x")
    check("two_dbs", db0.exists(key + "only4") == 0, "DB 0 sees a DB 4 key")


for name, fn in [("basic", test_basic), ("pubsub", test_pubsub), ("blpop", test_blpop),
                 ("watch", test_watch_conflict), ("two_dbs", test_two_dbs)]:
    try:
        fn()
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001 - any exception is a failed check
        fail(name, "%s: %s" % (type(e).__name__, e))
    print("ok", name, flush=True)
