"""Compares the committed outputs of `tierstream run` (from `tierstream tail`)
with the outputs of `tierstream replay` of the same workload (demo).

Usage: compare_outputs.py KAFKA_TAIL.jsonl REPLAY.jsonl
Prints the counts by schema side by side and whether every output agrees,
field by field; exits 1 when they differ.
"""
import collections
import json
import sys

COMPARED = {"tierstream.tier_changed.v1", "tierstream.tier_at_risk.v1",
            "tierstream.churn_warning.v1"}


def load(path, unwrap):
    docs = []
    with open(path) as f:
        for line in f:
            if line.strip():
                v = json.loads(line)
                v = v["value"] if unwrap else v
                if isinstance(v, dict) and v.get("schema") in COMPARED:
                    docs.append(v)
    return docs


def canonical(docs):
    return collections.Counter(json.dumps(d, sort_keys=True) for d in docs)


kafka = load(sys.argv[1], unwrap=True)
replay = load(sys.argv[2], unwrap=False)
counts_k = collections.Counter(d["schema"] for d in kafka)
counts_r = collections.Counter(d["schema"] for d in replay)
print(f"  {'schema':<32} {'run (Kafka)':>12} {'replay':>10}")
for schema in sorted(COMPARED):
    print(f"  {schema:<32} {counts_k[schema]:>12} {counts_r[schema]:>10}")
ck, cr = canonical(kafka), canonical(replay)
if ck == cr:
    print(f"  run and replay agree: all {len(kafka)} outputs are identical, field by field")
    sys.exit(0)
only_k = sum((ck - cr).values())
only_r = sum((cr - ck).values())
print(f"  run and replay DIFFER: {only_k} outputs only in run, {only_r} only in replay")
sys.exit(1)
