"""The paper's judge prompts and the parsers of judge replies.

A parser never guesses: a reply that does not follow the format asked for becomes a `Judgment`
with `error="unparseable"` and the reply in `raw`, so callers count it instead of training on it.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from pathlib import Path

from cutalign.data.schema import prompt_text
from cutalign.data.templates import ALPACA_JUDGED, ALPACA_PLAIN, JUDGE_PROMPT, Prompt
from cutalign.judges.base import Judgment, Preference

UNPARSEABLE = "unparseable"

# Annotation prompt of the paper's GPT-4 judge (cut-method.md section 2).
ANNOTATION_SYSTEM_PROMPT = (
    "Below is an instruction that describes a task and a potential response. Evaluate the response and "
    "provide valuable judgments to the response. If the response is perfect, please only reply with "
    "'perfect'. Otherwise, please indicate precisely what mistakes it has."
)
ANNOTATION_USER_TEMPLATE = "### Instruction: {instruction}\n\n### Response: {response}"

# The AI-judge format: the judgment, then "Yes." (perfect) or "No.".
AI_JUDGE_PROMPT = JUDGE_PROMPT
# What a trained judge writes for a satisfactory response whose data has no judgment text.
POSITIVE_JUDGMENT = "The response is perfect."

PAIRWISE_SYSTEM_PROMPT = (
    "Below is an instruction that describes a task and two potential responses, A and B. Decide which "
    "response completes the task better. Reply with only 'A', 'B' or 'tie'."
)
PAIRWISE_USER_TEMPLATE = (
    "### Instruction: {instruction}\n\n### Response A: {response_a}\n\n### Response B: {response_b}"
)
PAIRWISE_AI_PROMPT = (
    "Below is an instruction and two responses, A and B. Decide which response completes the instruction "
    "better. Reply with 'A', 'B' or 'tie'.\n\n### Instruction:\n{instruction}\n\n### Response A:\n"
    "{response_a}\n\n### Response B:\n{response_b}\n\n### Decision:\n"
)


@dataclass(frozen=True)
class ChatPrompt:
    """A judge request: an optional system turn and a user-turn template with {instruction} and {response}."""

    system: str | None = ANNOTATION_SYSTEM_PROMPT
    user: str = ANNOTATION_USER_TEMPLATE

    def __post_init__(self) -> None:
        names = _field_names(self.user, "prompt template 'user'")
        unknown = sorted(names - {"instruction", "response"})
        if unknown or "response" not in names:
            raise ValueError(
                f"prompt template 'user' must contain {{response}} and may contain {{instruction}}; found fields "
                f"{sorted(names)} (double literal braces: {{{{ }}}})")

    def folded(self) -> ChatPrompt:
        """The same request as one user turn (system text first), for servers or models without a system role."""
        if self.system is None:
            return self
        escaped = self.system.replace("{", "{{").replace("}", "}}")
        return ChatPrompt(system=None, user=f"{escaped}\n\n{self.user}")

    def messages(self, prompt: Prompt, completion: str) -> list[dict[str, str]]:
        user = self.user.format(instruction=instruction_text(prompt), response=completion)
        return ([{"role": "system", "content": self.system}] if self.system else []) + [
            {"role": "user", "content": user}]


def load_chat_prompt(path: str | Path | None) -> ChatPrompt:
    """The paper's annotation prompt, or a template file.

    A `.yaml`/`.yml`/`.json` file holds `user` (required) and `system` (optional); any other file is the
    user-turn template itself, with no system turn.
    """
    if path is None:
        return ChatPrompt()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ValueError(f"{path}: cannot read the prompt template: {err.strerror or err}") from err
    if path.suffix not in (".yaml", ".yml", ".json"):
        return ChatPrompt(system=None, user=text)
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML/JSON: {err}") from err
    if not isinstance(value, dict) or not isinstance(value.get("user"), str):
        raise ValueError(f"{path}: field 'user': expected a string (the user-turn template)")
    system = value.get("system")
    if system is not None and not isinstance(system, str):
        raise ValueError(f"{path}: field 'system': expected a string or null")
    unknown = sorted(set(value) - {"user", "system"})
    if unknown:
        raise ValueError(f"{path}: unknown field(s) {unknown}; a prompt template has 'system' and 'user'")
    try:
        return ChatPrompt(system=system, user=value["user"])
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err


def _field_names(template: str, what: str) -> set[str]:
    try:
        return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as err:
        raise ValueError(f"{what} is not a valid format string: {err}") from err


def instruction_text(prompt: Prompt) -> str:
    """The instruction as a judge reads it: the string, or a conversation's turns joined by newlines."""
    return prompt_text(prompt) if not isinstance(prompt, str) else prompt


class AIJudgeTemplate:
    """A `PromptTemplate` whose `critique` context is the paper's AI-judge prompt (for `JudgeTrainer`).

    Chat prompts are flattened into the instruction, so the judge sees one format whatever the data.
    """

    name = "ai_judge"

    def plain(self, prompt: Prompt) -> str:
        return ALPACA_PLAIN.format(instruction=instruction_text(prompt))

    def judged(self, prompt: Prompt, judgment: str) -> str:
        return ALPACA_JUDGED.format(instruction=instruction_text(prompt), judgment=judgment)

    def critique(self, prompt: Prompt, completion: str) -> str:
        return AI_JUDGE_PROMPT.format(instruction=instruction_text(prompt), response=completion)


def ai_judge_target(judgment: str | None, satisfactory: bool) -> str:
    """What a trained judge should write: the judgment (or POSITIVE_JUDGMENT) then " Yes." / " No."."""
    text = judgment.strip() if isinstance(judgment, str) and judgment.strip() else POSITIVE_JUDGMENT
    return f"{text} {'Yes.' if satisfactory else 'No.'}"


_PUNCT = str.maketrans("", "", string.punctuation + "\u2018\u2019\u201c\u201d")


def _normalise(text: str) -> str:
    return " ".join(text.translate(_PUNCT).lower().split())


def parse_annotation(reply: str | None) -> Judgment:
    """The paper's GPT-4 format: the whole reply "perfect" (any case or punctuation) is satisfactory,
    any other non-empty text is the judgment of an unsatisfactory response."""
    raw = reply or ""
    if _normalise(raw) == "perfect":
        return Judgment(text=None, satisfactory=True, raw=raw)
    if not _normalise(raw):
        return Judgment(text=None, satisfactory=None, raw=raw, error=UNPARSEABLE)
    return Judgment(text=raw.strip(), satisfactory=False, raw=raw)


# The judgment, then a final run of decisions ("No." -- or "No. No. No." when a model repeats itself).
_DECISION = re.compile(r"(?is)^(?P<text>.*?)(?P<run>(?:[\s\"'*]*\b(?:yes|no)\b[\s.!\"'*]*)+)$")
_WORD = re.compile(r"(?i)\b(yes|no)\b")


def parse_ai_judgment(reply: str | None) -> Judgment:
    """The AI-judge format: a judgment ending in "Yes." (perfect) or "No."; no final decision is unparseable.

    A repeated final decision ("No. No.", a model that did not stop) counts once; a final run that
    mixes both ("Yes. No.") is unparseable.

    A satisfactory verdict whose text is empty or the stock POSITIVE_JUDGMENT has `text=None`, as the
    canonical data writes positives.
    """
    raw = reply or ""
    match = _DECISION.match(raw.strip())
    decisions = {word.lower() for word in _WORD.findall(match["run"])} if match else set()
    if len(decisions) != 1:  # no final decision, or "Yes. No.": never guess
        return Judgment(text=None, satisfactory=None, raw=raw, error=UNPARSEABLE)
    satisfactory = decisions == {"yes"}
    text = match["text"].strip() or None
    if not satisfactory and text is None:  # "No." alone names no mistake: nothing to train on
        return Judgment(text=None, satisfactory=None, raw=raw, error=UNPARSEABLE)
    if satisfactory and text is not None and _normalise(text) == _normalise(POSITIVE_JUDGMENT):
        text = None
    return Judgment(text=text, satisfactory=satisfactory, raw=raw)


_PREFERENCE = re.compile(r"^(?:(?:response|output|answer)\s+)?(?P<choice>a|b|tie)$")


def parse_preference(reply: str | None) -> Preference:
    """ "A", "B" or "tie" (case, punctuation and a leading "Response" ignored); anything else is unparseable."""
    raw = reply or ""
    match = _PREFERENCE.match(_normalise(raw))
    if match is None:
        return Preference(winner=None, raw=raw, error=UNPARSEABLE)
    return Preference(winner=match["choice"], raw=raw)
