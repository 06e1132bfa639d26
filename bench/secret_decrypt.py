"""What encrypting secrets at rest costs a deployment: reading and decrypting one secret value.

    python bench/secret_decrypt.py --secrets 50 --reads 2000

Fills a fresh state store (its key in a temporary config home) with N secrets of three
versions each, then times `Store.secret_value` of a pinned version, as a deployment reads
each secret its spec uses, and the Fernet decryption inside it on its own. Prints the
median and 95th percentile of each.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import statistics
import tempfile
import time
from contextlib import closing
from pathlib import Path

from deployally.store import DB_FILE, Store


def _micro(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[int(len(ordered) * 0.95) - 1]
    return f"median {statistics.median(ordered) * 1e6:.0f} µs, p95 {p95 * 1e6:.0f} µs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--secrets", type=int, default=50)
    parser.add_argument("--reads", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="deployally-bench-") as tmp:
        os.environ["XDG_CONFIG_HOME"] = str(Path(tmp) / "config")
        os.environ.pop("DEPLOYALLY_SECRET_KEY", None)
        names = [f"secret_{i:03d}" for i in range(args.secrets)]
        with Store(Path(tmp) / "state") as store:
            for name in names:
                for _ in range(3):
                    store.set_secret(name, os.urandom(24).hex())
            picks = [(random.choice(names), random.randint(1, 3)) for _ in range(args.reads)]
            keys = store.unlock_secrets(create=False)
            assert keys.key_ids
            reads: list[float] = []
            for name, version in picks:
                started = time.perf_counter()
                store.secret_value(name, version)
                reads.append(time.perf_counter() - started)
            opened = store.secret_key_file().load()  # the keys a read uses, to time decryption alone
            assert opened is not None
        with closing(sqlite3.connect(Path(tmp) / "state" / DB_FILE)) as db:
            rows = db.execute("SELECT value, key_id FROM secret_versions").fetchall()
        decrypts: list[float] = []
        for i in range(args.reads):
            token, key_id = rows[i % len(rows)]
            started = time.perf_counter()
            opened.decrypt(token, key_id, "bench")
            decrypts.append(time.perf_counter() - started)
    print(f"{args.secrets} secrets x 3 versions, {args.reads} reads of a pinned version")
    print(f"  Store.secret_value (query + key check + decrypt): {_micro(reads)}")
    print(f"  of which Fernet decryption:                       {_micro(decrypts)}")


if __name__ == "__main__":
    main()
