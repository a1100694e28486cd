"""Prompt templates: render the text of each CUT context for an instruction.

A template turns a canonical prompt (a string, or chat messages ending with a user turn) into the
prompt TEXT of one context; :mod:`cutalign.data.views` tokenises that text separately from the
response so that the response ids are identical in every context. Two families exist:

- :class:`AlpacaTemplate`: the official CUT code's Alpaca strings (``templates/alpaca.json``), for
  base models and string prompts;
- :class:`ChatTemplate`: the tokenizer's own chat template, with the judgment placed in the last user
  turn or in a system turn, for chat models.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

Prompt = str | Sequence[Mapping[str, str]]

ALPACA_PLAIN = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the "
    "request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)
ALPACA_JUDGED = (
    "Below is an instruction that describes a task. Write a response to the instruction and the response "
    "should match the corresponding judgment.\n\n### Instruction:\n{instruction}\n\n### Judgment:\n"
    "{judgment}\n\n### Response:\n"
)
JUDGE_PROMPT = (
    "Below is an instruction-response pair. Write a judgment to evaluate the quality of this response. "
    "Then reply with 'Yes.' or 'No.' to show your decision on whether the response is perfect.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n{response}\n\n### Judgment:\n"
)
DEFAULT_FAKE_POSITIVE = "Your response to the instruction is satisfactory."

# Chat wordings (constructor arguments of ChatTemplate). They restate the Alpaca "judged" template's
# instruction -- the response must match the judgment -- in the places a chat model reads.
USER_JUDGMENT_FORMAT = (
    "{content}\n\nWrite a response that matches the following judgment of it.\nJudgment: {judgment}"
)
SYSTEM_JUDGMENT_FORMAT = "Write a response to the user's instruction that matches the following judgment of it.\nJudgment: {judgment}"
# The Llama-2-chat prompt format ("<s>[INST] <<SYS>>...<</SYS>> ... [/INST] answer </s>") as a Jinja
# chat template, for Llama-2-chat tokenizer files that ship without one (the shared one does).
LLAMA2_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}"
    "{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + content.strip() + ' ' + eos_token }}{% endif %}"
    "{% endfor %}"
)
CRITIQUE_REQUEST = "Write a judgment to evaluate the quality of your previous response: its strengths and its precise mistakes."


@runtime_checkable
class PromptTemplate(Protocol):
    """Renders the prompt text of each context: ``x``, ``[x, j]`` and ``[x, y]`` (judge input)."""

    def plain(self, prompt: Prompt) -> str: ...

    def judged(self, prompt: Prompt, judgment: str) -> str: ...

    def critique(self, prompt: Prompt, completion: str) -> str: ...


def _require_text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, got {type(value).__name__}")
    return value


class AlpacaTemplate:
    """The official CUT Alpaca templates; string prompts only (an ``input`` is already folded in)."""

    name = "alpaca"

    @staticmethod
    def _instruction(prompt: Prompt) -> str:
        if not isinstance(prompt, str):
            raise ValueError(
                "the Alpaca template renders string prompts only, but this prompt is a list of chat messages; "
                "use the chat template (template name 'chat') for conversational data"
            )
        return prompt

    def plain(self, prompt: Prompt) -> str:
        return ALPACA_PLAIN.format(instruction=self._instruction(prompt))

    def judged(self, prompt: Prompt, judgment: str) -> str:
        judgment = _require_text(judgment, "judgment")
        return ALPACA_JUDGED.format(instruction=self._instruction(prompt), judgment=judgment)

    def critique(self, prompt: Prompt, completion: str) -> str:
        completion = _require_text(completion, "completion")
        return JUDGE_PROMPT.format(instruction=self._instruction(prompt), response=completion)


class ChatTemplate:
    """Contexts rendered with ``tokenizer.apply_chat_template`` (generation prompt appended).

    ``judgment_placement="user"`` appends the judgment to the last user turn with
    ``user_judgment_format``; ``"system"`` puts ``system_judgment_format`` into the system turn,
    after an existing system message. ``system_prompt`` is added to prompts without a system turn.
    ``chat_template`` (e.g. :data:`LLAMA2_CHAT_TEMPLATE`) replaces the tokenizer's own template.
    """

    name = "chat"

    def __init__(
        self,
        tokenizer: Any,
        judgment_placement: Literal["user", "system"] = "user",
        system_prompt: str | None = None,
        *,
        user_judgment_format: str = USER_JUDGMENT_FORMAT,
        system_judgment_format: str = SYSTEM_JUDGMENT_FORMAT,
        critique_request: str = CRITIQUE_REQUEST,
        chat_template: str | None = None,
    ) -> None:
        if not (chat_template or getattr(tokenizer, "chat_template", None)):
            raise ValueError(
                f"tokenizer {getattr(tokenizer, 'name_or_path', '?')!r} has no chat_template; use the 'alpaca' "
                "template, or pass chat_template= (e.g. LLAMA2_CHAT_TEMPLATE for Llama-2-chat)"
            )
        if judgment_placement not in ("user", "system"):
            raise ValueError(f"judgment_placement must be 'user' or 'system', got {judgment_placement!r}")
        self.tokenizer = tokenizer
        self.judgment_placement = judgment_placement
        self.system_prompt = system_prompt
        self.user_judgment_format = user_judgment_format
        self.system_judgment_format = system_judgment_format
        self.critique_request = critique_request
        self.chat_template = chat_template

    def _messages(self, prompt: Prompt) -> list[dict[str, str]]:
        if isinstance(prompt, str):
            messages = [{"role": "user", "content": prompt}]
        else:
            messages = [_validated_message(m, i) for i, m in enumerate(prompt)]
            if not messages or messages[-1]["role"] != "user":
                raise ValueError(
                    "a conversational prompt must be a non-empty list of messages ending with a user turn"
                )
        if self.system_prompt is not None and messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        return messages

    def _render(self, messages: list[dict[str, str]]) -> str:
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, chat_template=self.chat_template
        )

    def plain(self, prompt: Prompt) -> str:
        return self._render(self._messages(prompt))

    def judged(self, prompt: Prompt, judgment: str) -> str:
        judgment = _require_text(judgment, "judgment")
        messages = self._messages(prompt)
        if self.judgment_placement == "user":
            last = messages[-1]
            messages[-1] = {
                **last,
                "content": self.user_judgment_format.format(content=last["content"], judgment=judgment),
            }
            return self._render(messages)
        note = self.system_judgment_format.format(judgment=judgment)
        if messages[0]["role"] == "system":
            messages[0] = {**messages[0], "content": f"{messages[0]['content']}\n\n{note}"}
        else:
            messages.insert(0, {"role": "system", "content": note})
        return self._render(messages)

    def critique(self, prompt: Prompt, completion: str) -> str:
        completion = _require_text(completion, "completion")
        messages = self._messages(prompt)
        messages += [
            {"role": "assistant", "content": completion},
            {"role": "user", "content": self.critique_request},
        ]
        return self._render(messages)


def _validated_message(message: Any, index: int) -> dict[str, str]:
    if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
        raise ValueError(f"chat message {index} must be a mapping with a string 'role', got {message!r}")
    if not isinstance(message.get("content"), str):
        raise ValueError(f"chat message {index} ({message['role']}) must have a string 'content'")
    return {"role": message["role"], "content": message["content"]}


def get_template(name: str, tokenizer: Any = None, **kwargs: Any) -> PromptTemplate:
    """Build a template by name: ``"alpaca"`` (no options) or ``"chat"`` (``ChatTemplate`` options)."""
    if name == "alpaca":
        if kwargs:
            raise TypeError(f"the alpaca template takes no options, got {sorted(kwargs)}")
        return AlpacaTemplate()
    if name == "chat":
        if tokenizer is None:
            raise ValueError("the chat template needs the tokenizer whose chat_template renders the prompts")
        return ChatTemplate(tokenizer, **kwargs)
    raise ValueError(f"unknown template {name!r}; choose 'alpaca' or 'chat'")
