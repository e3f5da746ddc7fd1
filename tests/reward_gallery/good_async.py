"""An async function, as if awaiting a judge model."""

import asyncio


async def reward_func(queries, prompts, labels, **kwargs):
    await asyncio.sleep(0.001)
    return [float(q.strip().endswith(label.strip())) for q, label in zip(queries, labels)]
