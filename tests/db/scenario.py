"""One scenario run against two MongoDB-wire servers, result by result (agent/tests/db.rs:
tankd through a provisioned URI, and SecantusDB).

    python scenario.py URI_UNDER_TEST URI_REFERENCE

Each step runs on both servers; the results (documents, counts, error codes) are
compared as Python values (dict equality: field order aside). Known divergences are
listed in KNOWN with the reason and MongoDB's answer, which the server under test must
give; any other difference fails the run, and so does a KNOWN step that no longer
differs (the list must stay true).
"""
import datetime
import json
import sys

import pymongo
from bson import ObjectId, Regex
from pymongo.errors import BulkWriteError, OperationFailure

KNOWN = {
    # Where the reference (a pre-release) departs from MongoDB's documented behaviour:
    # step -> (why, what the server under test must answer: MongoDB's answer).
    "distinct dotted": ("MongoDB's distinct on a.b over an array of documents returns each "
                        "element's b; the reference returns []", ["p", "r"]),
    "aggregate path-through-array": ("MongoDB's field path $items.k through an array of documents is "
                                     "the array of each element's k; the reference leaves the field out",
                                     [{"_id": 4, "ks": ["p", "r"]}, {"_id": 7, "ks": ["p"]}]),
}


def outcome(fn, db):
    try:
        return ("ok", fn(db))
    except BulkWriteError as e:
        return ("bulk", e.details.get("nInserted"), [w["code"] for w in e.details["writeErrors"]])
    except OperationFailure as e:
        return ("error", e.code)
    except pymongo.errors.PyMongoError as e:
        return ("client-error", type(e).__name__)


STEPS = []


def step(name):
    def add(fn):
        STEPS.append((name, fn))
        return fn
    return add


T0 = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
OIDS = [ObjectId("65a0000000000000000000%02x" % i) for i in range(8)]
DOCS = [
    {"_id": 1, "n": 1, "s": "apple", "tags": ["a", "b"], "sub": {"x": 1, "y": [1, 2]}, "mixed": 5},
    {"_id": 2, "n": 2.5, "s": "Banana", "tags": ["b"], "sub": {"x": 2}, "mixed": "5"},
    {"_id": 3, "n": -3, "s": "cherry", "tags": [], "sub": {"x": None}, "mixed": None},
    {"_id": 4, "n": 40, "tags": ["c", "a"], "items": [{"k": "p", "q": 1}, {"k": "r", "q": 5}], "mixed": [1, 2]},
    {"_id": 5, "n": 5, "s": "date", "when": T0, "mixed": True, "oid": OIDS[1]},
    {"_id": 6, "n": None, "s": "elder", "sub": {"x": 3, "y": [3]}, "mixed": {"a": 1}},
    {"_id": 7, "s": "fig", "items": [{"k": "p", "q": 9}], "mixed": 2.5},
    {"_id": 8, "n": 8, "s": "grape", "tags": ["a"], "mixed": T0},
]


@step("insert_many")
def _(db):
    db.drop_collection("c")
    return len(db.c.insert_many(DOCS).inserted_ids)


FILTERS = {
    "eq": {"n": 5}, "eq-double": {"n": 2.5}, "eq-int-as-double": {"n": 5.0},
    "gt": {"n": {"$gt": 2}}, "lte": {"n": {"$lte": 2.5}}, "ne": {"n": {"$ne": 5}},
    "null-matches-missing": {"n": None}, "exists": {"n": {"$exists": True}},
    "not-exists": {"s": {"$exists": False}}, "in": {"n": {"$in": [1, 40, "x"]}},
    "nin": {"tags": {"$nin": ["a"]}}, "array-elem": {"tags": "a"}, "array-whole": {"tags": ["a", "b"]},
    "empty-array": {"tags": []}, "all": {"tags": {"$all": ["a", "c"]}}, "size": {"tags": {"$size": 1}},
    "dotted": {"sub.x": 2}, "dotted-array": {"sub.y": 3}, "dotted-index": {"sub.y.1": 2},
    "dotted-null": {"sub.x": None}, "array-of-docs": {"items.k": "r"},
    "elemMatch": {"items": {"$elemMatch": {"k": "p", "q": {"$gt": 2}}}},
    "elemMatch-values": {"sub.y": {"$elemMatch": {"$gte": 2}}},
    "type-string": {"mixed": {"$type": "string"}}, "type-number": {"mixed": {"$type": "number"}},
    "type-array": {"mixed": {"$type": "array"}},
    "bracket-gt-number": {"mixed": {"$gt": 1}}, "bracket-gt-string": {"mixed": {"$gt": ""}},
    "date-gte": {"when": {"$gte": T0}}, "oid": {"oid": OIDS[1]},
    "or": {"$or": [{"n": 1}, {"s": "fig"}]}, "and": {"$and": [{"n": {"$gt": 0}}, {"n": {"$lt": 10}}]},
    "nor": {"$nor": [{"n": {"$gt": 2}}, {"s": {"$exists": False}}]}, "not": {"n": {"$not": {"$gt": 2}}},
    "regex": {"s": {"$regex": "^[a-c]"}}, "regex-i": {"s": {"$regex": "^b", "$options": "i"}},
    "regex-compiled": {"s": Regex("an", "")}, "regex-in": {"s": {"$in": [Regex("^g"), "fig"]}},
    "regex-not": {"s": {"$not": Regex("e")}},
}
for name, f in FILTERS.items():
    step(f"find {name}")(lambda db, f=f: [d["_id"] for d in db.c.find(f).sort("_id", 1)])

for name, f in {"bad-operator": {"n": {"$bogus": 1}}, "bad-top-level": {"$bogus": 1},
                "bad-in": {"n": {"$in": 1}}}.items():
    step(f"find error {name}")(lambda db, f=f: list(db.c.find(f)))

step("sort mixed types asc")(lambda db: [d["_id"] for d in db.c.find().sort([("mixed", 1), ("_id", 1)])])
step("sort mixed types desc")(lambda db: [d["_id"] for d in db.c.find().sort([("mixed", -1), ("_id", 1)])])
step("sort missing and arrays")(lambda db: [d["_id"] for d in db.c.find().sort([("tags", 1), ("_id", 1)])])
step("skip limit")(lambda db: [d["_id"] for d in db.c.find().sort("n", -1).skip(2).limit(3)])
step("projection include")(lambda db: list(db.c.find({}, {"s": 1, "sub.x": 1}).sort("_id", 1)))
step("projection exclude")(lambda db: list(db.c.find({}, {"tags": 0, "sub.y": 0, "_id": 0}).sort("_id", 1)))
step("projection no id")(lambda db: list(db.c.find({"_id": 1}, {"_id": 0, "n": 1})))
step("count")(lambda db: [db.c.count_documents({}), db.c.count_documents({"tags": "a"}), db.c.count_documents({"n": {"$gt": 1}}, skip=1, limit=2)])
step("distinct")(lambda db: sorted(db.c.distinct("tags")))
step("distinct dotted")(lambda db: sorted(db.c.distinct("items.k")))
step("distinct filtered")(lambda db: sorted(map(str, db.c.distinct("n", {"n": {"$type": "number"}}))))


def updated(filter, update, many=False, **kw):
    def run(db):
        db.drop_collection("u")
        db.u.insert_many(DOCS)
        r = (db.u.update_many if many else db.u.update_one)(filter, update, **kw)
        # A generated ObjectId differs between servers by design: compared by type.
        upserted = type(r.upserted_id).__name__ if isinstance(r.upserted_id, ObjectId) else r.upserted_id
        docs = [{k: (type(v).__name__ if isinstance(v, ObjectId) and k == "_id" else v) for k, v in d.items()}
                for d in db.u.find().sort("_id", 1)]
        return [r.matched_count, r.modified_count, upserted, docs]
    return run


UPDATES = {
    "set": ({"_id": 1}, {"$set": {"s": "x", "sub.z": [1], "new.deep": 1}}),
    "set-array-index": ({"_id": 1}, {"$set": {"sub.y.1": 9}}),
    "unset": ({"_id": 1}, {"$unset": {"s": "", "sub.x": 1, "nothere": 1}}),
    "inc": ({"_id": 2}, {"$inc": {"n": 1, "fresh": 2}}),
    "mul": ({"_id": 1}, {"$mul": {"n": 3, "fresh": 2}}),
    "min-max": ({"_id": 4}, {"$min": {"n": 10}, "$max": {"m": 3}}),
    "rename": ({"_id": 1}, {"$rename": {"s": "t", "sub.x": "sx"}}),
    "push": ({"_id": 1}, {"$push": {"tags": "c"}}),
    "push-each": ({"_id": 1}, {"$push": {"tags": {"$each": ["d", "e"]}}}),
    "addToSet": ({"_id": 1}, {"$addToSet": {"tags": {"$each": ["a", "z"]}}}),
    "pull": ({"_id": 4}, {"$pull": {"tags": "a", "items": {"q": {"$gt": 2}}}}),
    "pop": ({"_id": 1}, {"$pop": {"tags": -1}}),
    "setOnInsert-no-insert": ({"_id": 1}, {"$setOnInsert": {"z": 1}, "$set": {"y": 1}}),
    "inc-string": ({"_id": 1}, {"$inc": {"s": 1}}),
    "id-change": ({"_id": 1}, {"$set": {"_id": 9}}),
    "conflict": ({"_id": 1}, {"$set": {"a": 1}, "$inc": {"a": 1}}),
    "set-through-scalar": ({"_id": 1}, {"$set": {"n.x": 1}}),
    "bad-operator": ({"_id": 1}, {"$bogus": {"a": 1}}),
}
for name, (f, u) in UPDATES.items():
    step(f"update {name}")(updated(f, u))
step("update many")(updated({"n": {"$gt": 1}}, {"$set": {"big": True}}, many=True))
step("update upsert from filter")(updated({"_id": 50, "k": "v", "n": {"$gt": 1}}, {"$set": {"z": 1}}, upsert=True))
step("update upsert no match id")(updated({"s": "none"}, {"$inc": {"n": 1}}, upsert=True))


@step("replace_one")
def _(db):
    db.drop_collection("u")
    db.u.insert_many(DOCS)
    r = db.u.replace_one({"_id": 2}, {"whole": 1})
    return [r.matched_count, r.modified_count, db.u.find_one({"_id": 2})]


@step("find_one_and_update")
def _(db):
    db.drop_collection("u")
    db.u.insert_many(DOCS)
    before = db.u.find_one_and_update({"n": {"$gt": 1}}, {"$inc": {"n": 1}}, sort=[("n", -1)])
    after = db.u.find_one_and_update({"_id": 1}, {"$set": {"s": "y"}}, return_document=pymongo.ReturnDocument.AFTER, projection={"s": 1})
    upserted = db.u.find_one_and_update({"_id": 77}, {"$set": {"s": "new"}}, upsert=True, return_document=pymongo.ReturnDocument.AFTER)
    removed = db.u.find_one_and_delete({"s": "fig"})
    none = db.u.find_one_and_delete({"s": "nothing"})
    return [before, after, upserted, removed, none, db.u.count_documents({})]


@step("delete")
def _(db):
    db.drop_collection("u")
    db.u.insert_many(DOCS)
    return [db.u.delete_one({"tags": "a"}).deleted_count, db.u.delete_many({"n": {"$lt": 10}}).deleted_count,
            [d["_id"] for d in db.u.find().sort("_id", 1)]]


@step("insert duplicate ordered")
def _(db):
    db.drop_collection("u")
    db.u.insert_many([{"_id": 1}, {"_id": 1}, {"_id": 2}])


@step("insert duplicate unordered")
def _(db):
    db.drop_collection("u")
    db.u.insert_many([{"_id": 1}, {"_id": 1}, {"_id": 2}], ordered=False)


PIPELINES = {
    "group": [{"$group": {"_id": {"$size": {"$ifNull": ["$tags", []]}}, "n": {"$sum": 1}, "total": {"$sum": "$n"},
                          "avg": {"$avg": "$n"}, "min": {"$min": "$n"}, "max": {"$max": "$n"},
                          "ids": {"$push": "$_id"}, "first": {"$first": "$_id"}, "last": {"$last": "$_id"}}},
              {"$sort": {"_id": 1}}],
    "addToSet": [{"$unwind": "$tags"}, {"$group": {"_id": None, "t": {"$addToSet": "$tags"}}},
                 {"$project": {"_id": 0, "n": {"$size": "$t"}}}],
    "unwind-count": [{"$unwind": "$tags"}, {"$count": "n"}],
    "match-sort-skip-limit": [{"$match": {"n": {"$type": "number"}}}, {"$sort": {"n": -1}}, {"$skip": 1}, {"$limit": 2}],
    "project-computed": [{"$sort": {"_id": 1}}, {"$project": {"s": 1, "up": {"$toUpper": "$s"}, "twice": {"$multiply": ["$n", 2]},
                         "big": {"$cond": [{"$gt": ["$n", 4]}, "y", "n"]}, "first": {"$arrayElemAt": ["$tags", 0]}}}],
    "addFields-unset": [{"$sort": {"_id": 1}}, {"$addFields": {"sub.w": 1, "label": {"$concat": ["$s", "!"]}}},
                        {"$unset": ["tags", "items", "when", "mixed", "oid"]}],
    "lookup": [{"$match": {"_id": {"$lte": 5}}}, {"$sort": {"_id": 1}},
               {"$lookup": {"from": "c", "localField": "n", "foreignField": "_id", "as": "same"}},
               {"$project": {"same.s": 1, "same._id": 1}}],
    "lookup-missing": [{"$match": {"_id": 7}},
                       {"$lookup": {"from": "c", "localField": "n", "foreignField": "n", "as": "same"}},
                       {"$project": {"ids": {"$size": "$same"}}}],
    "path-through-array": [{"$match": {"_id": {"$in": [4, 7]}}}, {"$sort": {"_id": 1}}, {"$project": {"ks": "$items.k"}}],
    "bad-stage": [{"$bogus": {}}],
}
for name, p in PIPELINES.items():
    step(f"aggregate {name}")(lambda db, p=p: list(db.c.aggregate(p)))


@step("indexes")
def _(db):
    db.drop_collection("i")
    db.i.insert_many([{"_id": i, "e": f"e{i}", "g": i % 3, "t": [i, i + 1]} for i in range(20)])
    out = [db.i.create_index("e", unique=True), db.i.create_index([("g", 1), ("t", -1)]),
           sorted(ix["name"] for ix in db.i.list_indexes()), db.i.find_one({"e": "e7"}),
           db.i.count_documents({"g": 1, "t": 5}), db.i.count_documents({"t": {"$in": [3, 19]}})]
    try:
        db.i.insert_one({"e": "e3"})
    except OperationFailure as e:
        out.append(e.code)
    try:
        db.i.create_index("g", unique=True)
    except OperationFailure as e:
        out.append(e.code)
    db.i.drop_index("e_1")
    db.i.insert_one({"_id": 100, "e": "e3"})
    out.append(sorted(ix["name"] for ix in db.i.list_indexes()))
    return out


step("drop missing index")(lambda db: db.i.drop_index("nope"))
step("drop _id index")(lambda db: db.i.drop_index("_id_"))
step("unknown command")(lambda db: db.command("bogusCommand"))
step("list collections")(lambda db: sorted(db.list_collection_names()))
step("create existing")(lambda db: db.command("create", "c"))


@step("drop and list")
def _(db):
    db.drop_collection("i")
    db.drop_collection("nothere")
    return sorted(db.list_collection_names())


def main():
    under, reference = (pymongo.MongoClient(u, serverSelectionTimeoutMS=10000).get_default_database() for u in sys.argv[1:3])
    equal, unexpected, stale = 0, [], []
    for name, fn in STEPS:
        a, b = outcome(fn, under), outcome(fn, reference)
        if a == b:
            equal += 1
            if name in KNOWN:
                stale.append(name)
        elif name not in KNOWN or a != ("ok", KNOWN[name][1]):
            unexpected.append((name, a, b))
    for name, a, b in unexpected:
        print(f"DIFFERS {name}:\n  tankd:     {a!r}\n  reference: {b!r}")
    for name in stale:
        print(f"KNOWN but equal now: {name}")
    print(f"differential: {len(STEPS)} steps, {equal} equal, {len(unexpected)} unexpected differences, {len(KNOWN)} known")
    sys.exit(1 if unexpected or stale else 0)


main()
