"""Multi-step arithmetic chains: the lab's second verifiable task, errors on known tokens.

A chain ("Start with 7, add 5, multiply by 3, then subtract 4. What is the result?") is answered
step by step ("7 + 5 = 12; 12 * 3 = 36; 36 - 4 = 32. The result is 32."). Each step is checked on
its own (its result against its own operands and the previous result), so an error sits on the
one number that is wrong, and the final answer is checked against the true result. More steps make
fully correct answers rarer. Misconceptions are a fixed table of products the corpus states wrong.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from typing import NamedTuple

OPS = {"add": "+", "subtract": "-", "multiply by": "*"}
SYMBOL_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
MAX_VALUE = 999
_PROMPT = re.compile(r"^Start with (\d+), (.+)\. What is the result\?$")
_STEP = re.compile(r"^(add|subtract|multiply by) (\d+)$")
_EQUATION = re.compile(r"(-?\d+) ([+*-]) (\d+) = (-?\d+)")
_FINAL = re.compile(r"The result is (-?\d+)")


class Chain(NamedTuple):
    start: int
    steps: tuple[tuple[str, int], ...]  # (symbol, operand)

    @property
    def prompt(self) -> str:
        names = {v: k for k, v in OPS.items()}
        parts = [f"{names[s]} {b}" for s, b in self.steps]
        if len(parts) > 1:
            parts[-1] = "then " + parts[-1]
        return f"Start with {self.start}, {', '.join(parts)}. What is the result?"

    def results(self, wrong: Mapping[tuple[int, str, int], int] | None = None) -> list[int]:
        """Each step's result; ``wrong`` maps (a, symbol, b) to the value a misconception states."""
        values, value = [], self.start
        for symbol, b in self.steps:
            true = SYMBOL_OPS[symbol](value, b)
            value = (wrong or {}).get((value, symbol, b), true)
            values.append(value)
        return values

    def answer(self, results: list[int] | None = None) -> str:
        """The step-by-step response (with ``results`` in place of the true ones, for wrong answers)."""
        results = results or self.results()
        left = [self.start, *results[:-1]]
        steps = "; ".join(f"{a} {s} {b} = {r}" for a, (s, b), r in zip(left, self.steps, results, strict=True))
        return f"{steps}. The result is {results[-1]}."


def parse_chain(prompt: str) -> Chain | None:
    """The chain a prompt asks for, or None when it is not a chain prompt."""
    match = _PROMPT.match(prompt.strip())
    if not match:
        return None
    steps = []
    for part in match[2].split(", "):
        step = _STEP.match(part.removeprefix("then "))
        if not step:
            return None
        steps.append((OPS[step[1]], int(step[2])))
    return Chain(int(match[1]), tuple(steps))


def make_chains(n: int, n_steps: int = 3, seed: int = 0, max_operand: int = 9) -> list[Chain]:
    """``n`` distinct seeded chains of ``n_steps`` steps whose values stay in 0..999."""
    if n_steps < 1 or max_operand < 2:
        raise ValueError(f"n_steps must be >= 1 and max_operand >= 2, got {n_steps}, {max_operand}")
    rng = random.Random(seed)
    chains: dict[Chain, None] = {}
    for _ in range(1000 * max(1, n)):
        if len(chains) == n:
            break
        value, steps = rng.randint(2, max_operand), []
        start = value
        for _ in range(n_steps):
            symbol = rng.choice([s for s in "+-*" if _fits(value, s, max_operand)])
            b = rng.randint(2, max_operand) if symbol == "*" else rng.randint(1, max_operand)
            b = min(b, value) if symbol == "-" else b
            steps.append((symbol, b))
            value = SYMBOL_OPS[symbol](value, b)
        chains[Chain(start, tuple(steps))] = None
    if len(chains) < n:
        raise ValueError(f"only {len(chains)} distinct chains of {n_steps} steps exist here; ask for fewer")
    return list(chains)


def _fits(value: int, symbol: str, max_operand: int) -> bool:
    return {"+": value + max_operand <= MAX_VALUE, "-": value >= 1, "*": value * max_operand <= MAX_VALUE}[symbol]


def misconceived_products(chains: list[Chain], fraction: float, seed: int = 0) -> dict[tuple[int, str, int], int]:
    """A fixed wrong result for ``fraction`` of the products the chains use (the corpus states these)."""
    products = sorted({(a, s, b) for c in chains
                       for a, (s, b) in zip([c.start, *c.results()[:-1]], c.steps, strict=True) if s == "*"})
    rng = random.Random(seed)
    chosen = rng.sample(products, round(fraction * len(products)))
    return {(a, s, b): a * b + rng.choice([-b, b, -1, 1]) for a, s, b in chosen}


def chain_findings(chain: Chain, completion: str) -> list[tuple[str, str, str, str | None, tuple[int, int] | None]]:
    """(field, claim, right, said, span) for each step and the final answer of ``completion``.

    A step is right when its result follows from its own operands and its left operand is the
    previous result (so one slip is one error, not a cascade); the final answer must be the truth.
    """
    equations = list(_EQUATION.finditer(completion))
    truth = chain.results()
    out = []
    previous = chain.start
    for i, (symbol, b) in enumerate(chain.steps):
        field = f"step {i + 1}"
        if i >= len(equations):
            out.append((field, f"step {i + 1} gives {truth[i]}", str(truth[i]), None, None))
            continue
        eq = equations[i]
        a, said = int(eq[1]), int(eq[4])
        right = SYMBOL_OPS[symbol](previous, b)
        if a != previous or eq[2] != symbol or int(eq[3]) != b:
            out.append((field, f"step {i + 1} is {previous} {symbol} {b} = {right}", str(right), eq[0], eq.span()))
        else:
            claim = f"{a} {symbol} {b} = {right}"
            out.append((field, claim, str(right), str(said), eq.span(4)))
        previous = said
    final = _FINAL.search(completion)
    claim = f"the result is {truth[-1]}"
    said_final = (final[1], final.span(1)) if final else (None, None)
    out.append(("the result", claim, str(truth[-1]), *said_final))
    return out
