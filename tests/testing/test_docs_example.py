import trio

import kora
from kora.testing import ChaosConfig, partition, wait_converged

SCHEMA = kora.define_schema(version=1, collections={"todos": {"title": kora.string()}})


async def test_offline_edits_reach_the_other_device(kora_app, autojump_clock):
    flaky = ChaosConfig(drop_rate=0.2, duplicate_rate=0.1, reorder_rate=0.2)
    async with kora_app(SCHEMA) as phone, kora_app(SCHEMA, chaos=flaky, seed=7) as laptop:
        with partition(phone):  # the phone loses its network
            todo = await phone.todos.insert({"title": "buy milk"})
            await trio.sleep(60)  # a virtual minute offline
            assert await laptop.todos.get(todo.id) is None
        with trio.fail_after(300):
            await wait_converged(phone, laptop)
        assert (await laptop.todos.get(todo.id)).fields["title"] == "buy milk"
