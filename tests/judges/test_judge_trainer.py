"""What the judge trainer learns from: the AI-judge prompt in, judgment + Yes./No. out."""

from __future__ import annotations

import datasets
import pytest

from cutalign.data.views import ViewBuilder, build_dataset
from cutalign.judges.prompts import POSITIVE_JUDGMENT, AIJudgeTemplate
from cutalign.judges.training import split_heldout
from cutalign.trainer.judge_trainer import with_judge_targets


def test_targets_end_with_the_decision_and_views_use_the_ai_judge_prompt(tokenizer):
    rows = [
        {"id": "p", "prompt": "Say hi.", "completion": "Hi!", "judgment": None, "label": True, "score": None,
         "refinement": None},
        {"id": "n", "prompt": "Add 2+2.", "completion": "5", "judgment": "Wrong sum: 4.", "label": False,
         "score": None, "refinement": None},
    ]
    targets = with_judge_targets(datasets.Dataset.from_list(rows))
    assert targets["judgment"] == [f"{POSITIVE_JUDGMENT} Yes.", "Wrong sum: 4. No."]
    views, dropped = build_dataset(targets, ViewBuilder(tokenizer, AIJudgeTemplate(), max_length=256), ["critique"])
    assert len(views) == 2 and not dropped
    prompt = tokenizer.decode(views[1]["critique_prompt_ids"], skip_special_tokens=True)
    assert "Write a judgment to evaluate the quality of this response." in prompt
    assert prompt.rstrip().endswith("### Judgment:")
    target = tokenizer.decode(views[1]["critique_target_ids"], skip_special_tokens=True)
    assert target.strip() == "Wrong sum: 4. No."


def test_heldout_split_is_seeded_and_disjoint():
    data = datasets.Dataset.from_list([{"id": str(i)} for i in range(20)])
    train, heldout = split_heldout(data, 0.25, seed=3)
    again = split_heldout(data, 0.25, seed=3)[1]
    assert len(heldout) == 5 and heldout["id"] == again["id"]
    assert not set(train["id"]) & set(heldout["id"]) and len(train) == 15
    assert split_heldout(data, 0.0, seed=3)[1] is None
    with pytest.raises(ValueError, match="eval_fraction"):
        split_heldout(data, 1.0, seed=3)
