"""Packed-row layouts: hand-checked costs, and properties over random passes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import LlamaConfig

from cutalign.data.packing import (
    AUTO_ROW_CAP,
    attention_pair_cost,
    first_fit_decreasing,
    pack,
    packed_row_length,
)


def layout_cost(lengths: list[int], rows: list[list[int]], pair_cost: float) -> float:
    width = max(sum(lengths[i] for i in row) for row in rows)
    return len(rows) * width * (1 + pair_cost * width)


def test_pair_cost_by_hand():
    # Tiny Llama: pair 4*128 = 512 FLOPs; position 2 * (4*128^2 + 3*128*512) = 524,288 -> 1/1024.
    tiny = LlamaConfig(hidden_size=128, intermediate_size=512, num_attention_heads=4, num_key_value_heads=4)
    assert attention_pair_cost(tiny) == pytest.approx(1 / 1024)
    # Grouped KV heads shrink k/v: 2*64*(8*8) + 2*64*(2*8) + 3*64*256 = 59,392 weights; pair 4*64 = 256.
    gqa = LlamaConfig(hidden_size=64, intermediate_size=256, num_attention_heads=8, num_key_value_heads=2)
    assert attention_pair_cost(gqa) == pytest.approx(256 / (2 * 59_392))
    assert attention_pair_cost(None) == 0.0


def test_layouts_by_hand():
    # pair cost 1/1024: one row 850 * (1 + 850/1024) = 1,555.6; three rows of 300: 900 * 1.293 = 1,163.9.
    assert pack([300, 250, 200, 100], "auto", 1 / 1024) == [[0], [1], [2, 3]]
    # pair cost 1/25,000: one row 878.9 beats three rows 910.8 (their padding costs more than attention saves).
    assert pack([300, 250, 200, 100], "auto", 1 / 25_000) == [[0, 1, 2, 3]]
    assert pack([300, 250, 200, 100], 450) == [[0, 3], [1, 2]]
    assert pack([300, 250], 1) == [[0], [1]]  # a bound below the longest sequence is raised to it
    with pytest.raises(ValueError, match="packed_row_length"):
        pack([3], -2)


def test_auto_rows_stay_under_the_cap_even_when_attention_is_free():
    lengths = [3000] * 6
    rows = pack(lengths, "auto", 0.0)
    assert max(sum(lengths[i] for i in row) for row in rows) <= AUTO_ROW_CAP
    assert pack([AUTO_ROW_CAP + 10, 5], "auto", 0.0) == [[0], [1]]  # a longer sequence still gets its row


@settings(max_examples=200, deadline=None)
@given(lengths=st.lists(st.integers(1, 3000), min_size=1, max_size=24),
       pair_cost=st.sampled_from([0.0, 1 / 100_000, 1 / 4096, 1 / 1024, 1 / 64]),
       bound=st.integers(1, 5000))
def test_every_layout_holds_each_sequence_once_and_auto_costs_least(lengths, pair_cost, bound):
    for rows in (pack(lengths, "auto", pair_cost), pack(lengths, bound), pack(lengths, None)):
        assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
        assert all(row == sorted(row) for row in rows)
    bounded = pack(lengths, bound)
    assert max(sum(lengths[i] for i in row) for row in bounded) <= max(bound, max(lengths))
    auto = pack(lengths, "auto", pair_cost)
    alone = first_fit_decreasing(lengths, max(lengths))
    assert layout_cost(lengths, auto, pair_cost) <= layout_cost(lengths, alone, pair_cost) + 1e-9
    if sum(lengths) <= AUTO_ROW_CAP:
        assert layout_cost(lengths, auto, pair_cost) <= layout_cost(lengths, [list(range(len(lengths)))], pair_cost)


def test_flash_attention_gets_one_row_and_mask_based_attention_the_cost_model():
    class Model:
        def __init__(self, implementation: str) -> None:
            self.config = LlamaConfig(attn_implementation=implementation)

    assert packed_row_length(Model("flash_attention_2")) is None
    assert packed_row_length(Model("sdpa")) == "auto"
    assert packed_row_length(Model("sdpa"), 0) is None
    assert packed_row_length(Model("flash_attention_2"), 512) == 512
