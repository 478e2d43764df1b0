"""The pymongo side of scripts/bench/db: the same client code for tankd and the peer, so
the figures differ only by the server.

    db-driver.py ports N              N free TCP ports on 127.0.0.1
    db-driver.py run URI DOCS FINDS   insert_many DOCS documents of 1 KiB into a fresh
                                      collection, index the key field, then FINDS
                                      find_one on random keys; prints
                                      "<insert s> <find s>"
"""

import random
import socket
import sys
import time

import pymongo


def ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    print(" ".join(str(s.getsockname()[1]) for s in socks))


def run(uri, docs, finds):
    db = pymongo.MongoClient(uri, serverSelectionTimeoutMS=10000).get_default_database()
    db.drop_collection("bench")
    # 1 KiB each as BSON: _id, a key and a padding string.
    pad = "x" * 990
    batch = [{"_id": i, "k": f"key-{i:08d}", "pad": pad} for i in range(docs)]
    t0 = time.perf_counter()
    db.bench.insert_many(batch)
    inserted = time.perf_counter() - t0
    assert db.bench.count_documents({}) == docs
    db.bench.create_index("k")
    rng = random.Random(7)
    keys = [f"key-{rng.randrange(docs):08d}" for _ in range(finds)]
    t0 = time.perf_counter()
    for k in keys:
        d = db.bench.find_one({"k": k})
        assert d is not None and d["k"] == k
    found = time.perf_counter() - t0
    db.drop_collection("bench")
    print(f"{inserted:.3f} {found:.3f}")


if __name__ == "__main__":
    if sys.argv[1] == "ports":
        ports(int(sys.argv[2]))
    elif sys.argv[1] == "run":
        run(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        sys.exit(__doc__)
