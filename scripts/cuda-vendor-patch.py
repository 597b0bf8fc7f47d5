"""Makes the vendored candle-core (scripts/build-cuda.sh) ask cudarc to load the CUDA libraries
at run time instead of linking them: in its Cargo.toml the cudarc feature `dynamic-linking`
becomes `dynamic-loading`. Cargo checks vendored files against .cargo-checksum.json (and
Cargo.lock against its "package" checksum, which stays), so the edited file's own checksum is
updated there.

Usage: python3 scripts/cuda-vendor-patch.py VENDOR_DIR
"""

import glob
import hashlib
import json
import os
import sys

(crate,) = glob.glob(os.path.join(sys.argv[1], "candle-core-*"))
manifest = os.path.join(crate, "Cargo.toml")
with open(manifest) as f:
    text = f.read()
if text.count('"dynamic-linking"') != 1:
    sys.exit(f"{manifest}: expected the cudarc feature dynamic-linking once")
text = text.replace('"dynamic-linking"', '"dynamic-loading"')
with open(manifest, "w") as f:
    f.write(text)
sums_path = os.path.join(crate, ".cargo-checksum.json")
with open(sums_path) as f:
    sums = json.load(f)
sums["files"]["Cargo.toml"] = hashlib.sha256(text.encode()).hexdigest()
with open(sums_path, "w") as f:
    json.dump(sums, f)
