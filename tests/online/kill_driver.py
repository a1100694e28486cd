"""`python kill_driver.py STAGE ITERATION SEED MAX_DELAY ARGS...`: run `cutalign online ARGS` and SIGKILL
this process at a random point of STAGE of iteration ITERATION.

The kill comes from a timer started when the stage begins (uniform in [0, MAX_DELAY] seconds); a stage
that ends first is killed right after its outputs are written and before its status is recorded,
the last moment a crash can hit it.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import threading


def main() -> None:
    stage, iteration, seed, max_delay = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    from cutalign.online import loop

    original = getattr(loop._Iteration, stage)

    def killed(self):
        if self.k != iteration:
            return original(self)
        delay = random.Random(seed).uniform(0, max_delay)
        threading.Timer(delay, os.kill, (os.getpid(), signal.SIGKILL)).start()
        original(self)
        os.kill(os.getpid(), signal.SIGKILL)

    setattr(loop._Iteration, stage, killed)
    from cutalign.cli import main as cli_main

    sys.argv = ["cutalign", "online", *sys.argv[5:]]
    cli_main()


if __name__ == "__main__":
    main()
