"""The server's dynamic batcher on the real tiny model: concurrent requests share one generate call."""

from __future__ import annotations

import asyncio

import pytest

from cutalign.generation import SamplingParams, TransformersGenerator
from cutalign.serve.batcher import Batcher


@pytest.fixture(scope="module")
def generator(tiny_model_dir):
    return TransformersGenerator.from_pretrained(str(tiny_model_dir), device="cpu")


def test_requests_arriving_together_are_one_batch_per_sampling_setting(generator):
    greedy, short = SamplingParams(max_new_tokens=4), SamplingParams(max_new_tokens=2)
    prompts = ["The sky is", "Water is", "Fire is", "Earth is"]

    async def run():
        batcher = Batcher(generator, max_batch_size=8, wait_s=0.2)
        batcher.start()
        jobs = [batcher.submit(p, greedy, 1) for p in prompts] + [batcher.submit("Air is", short, 1, stream=True)]
        results = await asyncio.gather(*(job.future for job in jobs))
        events = []
        while not jobs[-1].events.empty():
            events.append(jobs[-1].events.get_nowait())
        await batcher.stop()
        return batcher.batches, results, events

    batches, results, events = asyncio.run(run())
    assert batches == 2  # one per sampling setting, not one per request
    assert [r.text for r in results[:4]] == [r.text for r in generator.generate(prompts, greedy)]
    assert events[-1] == ("done", results[4])
    assert "".join(value for kind, value in events if kind == "text") == results[4].text


def test_a_failing_model_fails_its_requests_not_the_server(generator):
    async def run():
        batcher = Batcher(generator, wait_s=0)
        batcher.start()
        bad = batcher.submit([{"role": "system", "content": "x"}], SamplingParams(max_new_tokens=2), 1)
        with pytest.raises(ValueError, match="Alpaca template"):
            await bad.future
        good = batcher.submit("Hi", SamplingParams(max_new_tokens=2), 1)
        text = (await good.future).text
        await batcher.stop()
        return text

    assert asyncio.run(run()) == generator.generate(["Hi"], SamplingParams(max_new_tokens=2))[0].text
