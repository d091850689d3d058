"""Child process of test_durability.py: writes local operations until it is killed.

Usage: ``python sigkill_writer.py DB_PATH SEED``.  Prints ``ready`` once the store is open,
then the id of every operation after the write call that made it has returned (so every
printed id was locally committed, "L-acked").
"""

from __future__ import annotations

import random
import sys

import trio

from kora.store import LocalMutation, open_sqlite_store


async def main(path: str, seed: int) -> None:
    rng = random.Random(seed)
    async with open_sqlite_store(path) as store:
        print("ready", flush=True)
        records: list[str] = []
        while True:
            mutations = []
            for _ in range(rng.randint(1, 5)):
                if records and rng.random() < 0.3:
                    mutations.append(
                        LocalMutation.update("items", rng.choice(records), {"v": rng.random()})
                    )
                else:
                    body = "x" * rng.randint(50, 4000)
                    mutations.append(
                        LocalMutation.insert("items", {"body": body, "n": len(records)})
                    )
            ops = await store.write_local_many(mutations)
            records.extend(op.record_id for op in ops if op.type == "insert")
            sys.stdout.write("".join(f"{op.id}\n" for op in ops))
            sys.stdout.flush()


if __name__ == "__main__":
    trio.run(main, sys.argv[1], int(sys.argv[2]))
