"""Checks that Cargo.toml's `rust-version` is true to Cargo.lock: no locked
dependency may need a newer Rust than the package claims. Reads each locked
crate's manifest from cargo's registry cache (run after a build)."""
import glob
import os
import re
import sys


def version(text):
    parts = [int(x) for x in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


root = os.path.join(os.path.dirname(__file__), "..")
manifest = open(os.path.join(root, "Cargo.toml")).read()
claimed = version(re.search(r'^rust-version\s*=\s*"([^"]+)"', manifest, re.M).group(1))
lock = open(os.path.join(root, "Cargo.lock")).read()
home = os.environ.get("CARGO_HOME", os.path.expanduser("~/.cargo"))
registries = glob.glob(os.path.join(home, "registry", "src", "*"))
needed, checked = [], 0
for name, ver in re.findall(r'name = "([^"]+)"\nversion = "([^"]+)"\nsource = "registry', lock):
    for reg in registries:
        path = os.path.join(reg, f"{name}-{ver}", "Cargo.toml")
        if os.path.exists(path):
            checked += 1
            m = re.search(r'^rust-version\s*=\s*"([^"]+)"', open(path).read(), re.M)
            if m and version(m.group(1)) > claimed:
                needed.append(f"{name} {ver} needs Rust {m.group(1)}")
            break
if needed:
    print(f"rust-version {'.'.join(map(str, claimed))} is not true to Cargo.lock:")
    print("\n".join(f"  {n}" for n in needed))
    sys.exit(1)
print(f"rust-version {'.'.join(map(str, claimed))} covers all {checked} locked registry crates")
