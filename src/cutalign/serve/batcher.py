"""Dynamic batching: requests that arrive within a few milliseconds share one `generate` call.

A single worker task takes the first waiting request, collects more for up to `wait_s` (or until
`max_batch_size`), groups them by sampling parameters (one `generate` call takes one set) and runs
each group in a worker thread, so the event loop keeps accepting requests meanwhile. Streaming
requests receive their text deltas through an asyncio queue fed from that thread.
"""

from __future__ import annotations

import asyncio
import inspect
import secrets
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from cutalign.generation.base import GenerationResult, Generator, Prompt, SamplingParams


@dataclass
class Job:
    """One prompt to answer; `events` is set for streaming (("text", delta) then ("done", result))."""

    prompt: Prompt
    params: SamplingParams
    seed: int
    future: asyncio.Future = field(repr=False)
    events: asyncio.Queue | None = field(default=None, repr=False)


class Batcher:
    def __init__(self, generator: Generator, *, max_batch_size: int = 8, wait_s: float = 0.005) -> None:
        if max_batch_size < 1 or wait_s < 0:
            raise ValueError("max_batch_size must be >= 1 and the batch wait >= 0")
        self.generator = generator
        self.max_batch_size = max_batch_size
        self.wait_s = wait_s
        self.streams = "on_text" in inspect.signature(generator.generate).parameters
        self.queue: asyncio.Queue[Job] = asyncio.Queue()
        self.batches = 0  # generate calls made (tests read it to see batching happen)
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def submit(self, prompt: Prompt, params: SamplingParams, seed: int | None, *, stream: bool = False) -> Job:
        loop = asyncio.get_running_loop()
        job = Job(prompt, params, seed if seed is not None else secrets.randbits(31), loop.create_future(),
                  asyncio.Queue() if stream else None)
        self.queue.put_nowait(job)
        return job

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self.queue.get()]
            deadline = loop.time() + self.wait_s
            while len(jobs) < self.max_batch_size:
                remaining = deadline - loop.time()
                try:
                    jobs.append(self.queue.get_nowait() if remaining <= 0 else
                                await asyncio.wait_for(self.queue.get(), remaining))
                except (asyncio.QueueEmpty, TimeoutError):
                    break
            groups: dict[SamplingParams, list[Job]] = defaultdict(list)
            for job in jobs:
                groups[job.params].append(job)
            for params, group in groups.items():
                await self._run_group(loop, params, group)

    async def _run_group(self, loop: asyncio.AbstractEventLoop, params: SamplingParams, group: list[Job]) -> None:
        def on_text(index: int, delta: str) -> None:
            events = group[index].events
            if events is not None:
                loop.call_soon_threadsafe(events.put_nowait, ("text", delta))

        kwargs: dict[str, Any] = {"seeds": [job.seed for job in group]}
        if self.streams and any(job.events is not None for job in group):
            kwargs["on_text"] = on_text
        self.batches += 1
        try:
            results = await asyncio.to_thread(self.generator.generate, [j.prompt for j in group], params, **kwargs)
        except Exception as err:  # the model failed: every waiting request learns it (a 500)
            for job in group:
                _finish(job, error=err)
            return
        for job, result in zip(group, results, strict=True):
            if job.events is not None and "on_text" not in kwargs and result.text:
                job.events.put_nowait(("text", result.text))  # a backend that cannot stream: one piece
            _finish(job, result=result)


def _finish(job: Job, *, result: GenerationResult | None = None, error: Exception | None = None) -> None:
    if job.events is not None:
        job.events.put_nowait(("error", error) if error is not None else ("done", result))
    if not job.future.done():
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result)
    if error is not None and job.events is not None:
        job.future.exception()  # retrieved by the stream; avoid "exception never retrieved"
