"""Parsers of judge replies: never guess, keep the raw reply."""

from __future__ import annotations

import pytest

from cutalign.judges.prompts import (
    ANNOTATION_SYSTEM_PROMPT,
    POSITIVE_JUDGMENT,
    AIJudgeTemplate,
    ChatPrompt,
    ai_judge_target,
    load_chat_prompt,
    parse_ai_judgment,
    parse_annotation,
    parse_preference,
)


@pytest.mark.parametrize("reply", ["perfect", "Perfect.", "  PERFECT!  ", "'perfect'", "Perfect"])
def test_annotation_perfect_is_satisfactory(reply):
    judgment = parse_annotation(reply)
    assert (judgment.text, judgment.satisfactory, judgment.error, judgment.raw) == (None, True, None, reply)


def test_annotation_other_text_is_the_judgment_and_perfect_inside_a_sentence_is_not_positive():
    judgment = parse_annotation("Not perfect: the capital of Zorvia is Velmar, not Tarkin.\n")
    assert judgment.satisfactory is False
    assert judgment.text == "Not perfect: the capital of Zorvia is Velmar, not Tarkin."


@pytest.mark.parametrize("reply", ["", "   ", "...", None])
def test_annotation_empty_or_garbage_is_unparseable(reply):
    judgment = parse_annotation(reply)
    assert judgment.error == "unparseable" and judgment.satisfactory is None and judgment.raw == (reply or "")


def test_ai_judgment_parses_text_and_decision():
    negative = parse_ai_judgment("The capital is wrong: it is Velmar. No.")
    assert (negative.text, negative.satisfactory) == ("The capital is wrong: it is Velmar.", False)
    positive = parse_ai_judgment(f"{POSITIVE_JUDGMENT} Yes.")
    assert (positive.text, positive.satisfactory, positive.error) == (None, True, None)
    assert parse_ai_judgment("Clear and correct.\nYes").text == "Clear and correct."
    repeated = parse_ai_judgment(f"{POSITIVE_JUDGMENT} Yes. Yes. Yes.")
    assert (repeated.text, repeated.satisfactory) == (None, True)
    assert parse_ai_judgment("Wrong. No. No.").text == "Wrong."


@pytest.mark.parametrize("reply", ["The capital is wrong.", "", "No.", "Yes. The capital is wrong.", "Hm. Yes. No."])
def test_ai_judgment_without_final_decision_or_reason_is_unparseable(reply):
    judgment = parse_ai_judgment(reply)
    assert judgment.error == "unparseable" and judgment.satisfactory is None and judgment.raw == reply


def test_ai_judge_target_round_trips_through_the_parser():
    for judgment, label in ((None, True), ("Wrong year: 1950, not 1960.", False), ("Fine work.", True)):
        parsed = parse_ai_judgment(ai_judge_target(judgment, label))
        assert parsed.satisfactory is label and parsed.text == judgment


def test_ai_judge_template_renders_the_paper_prompt_and_flattens_chats():
    text = AIJudgeTemplate().critique([{"role": "user", "content": "Hi?"}], "Hello.")
    assert text.startswith("Below is an instruction-response pair.") and text.endswith("### Judgment:\n")
    assert "### Instruction:\nHi?\n\n### Response:\nHello.\n\n" in text


@pytest.mark.parametrize(("reply", "winner"), [("A", "a"), ("b.", "b"), ("Tie", "tie"), ("Response A", "a")])
def test_preference(reply, winner):
    assert parse_preference(reply).winner == winner


@pytest.mark.parametrize("reply", ["", "Both are good", "A or B"])
def test_preference_unparseable(reply):
    preference = parse_preference(reply)
    assert preference.winner is None and preference.error == "unparseable"


def test_chat_prompt_default_is_the_papers_annotation_prompt():
    messages = ChatPrompt().messages("Name a color.", "Blue.")
    assert messages[0] == {"role": "system", "content": ANNOTATION_SYSTEM_PROMPT}
    assert messages[1]["content"] == "### Instruction: Name a color.\n\n### Response: Blue."
    assert "only reply with 'perfect'" in ANNOTATION_SYSTEM_PROMPT


def test_prompt_template_files(tmp_path):
    yaml_file = tmp_path / "p.yaml"
    yaml_file.write_text("system: Be strict.\nuser: 'Q: {instruction} A: {response}'\n")
    assert load_chat_prompt(yaml_file).messages("x", "y") == [
        {"role": "system", "content": "Be strict."}, {"role": "user", "content": "Q: x A: y"}]
    text_file = tmp_path / "p.txt"
    text_file.write_text("Judge: {response}")
    assert load_chat_prompt(text_file).messages("x", "y") == [{"role": "user", "content": "Judge: y"}]
    bad = tmp_path / "bad.txt"
    bad.write_text("no response field {instruction}")
    with pytest.raises(ValueError, match="must contain"):
        load_chat_prompt(bad)
    with pytest.raises(ValueError, match="cannot read"):
        load_chat_prompt(tmp_path / "missing.txt")
