"""Prints the first tier upgrades and downgrades from `tierstream tail` output (demo)."""
import json
import sys

shown = 0
for line in sys.stdin:
    v = json.loads(line)["value"]
    if v.get("schema") != "tierstream.tier_changed.v1" or v["direction"] == "initial":
        continue
    if shown == 10:
        continue  # keep reading so the producer of the pipe is not cut off
    print(f"  {v['customer_id']}  {v['from']:>8} -> {v['to']:<8}  {v['direction']:<9}  "
          f"at {v['at']}  value_12m={v['inputs']['value_12m']}")
    shown += 1
