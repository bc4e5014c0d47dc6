"""Rendering conversations with a tokenizer's chat template, giving it the messages the way it expects them.

What a template is given is what serving (vLLM, transformers) gives it:
- reasoning: a template that reads `reasoning_content` (Qwen3) gets that field, split out of a
  `<think>...</think>` prefix of the content when the data has it inline; any other template gets the
  reasoning inline as `<think>\\n...\\n</think>\\n\\n` before the answer (what DeepSeek-R1's templates parse);
- tool calls: `arguments` as an object (vLLM parses the JSON string before rendering), except for templates that
  concatenate it as text (DeepSeek), which get the JSON string;
- today's date: `strftime_now` (Llama 3.2 prints it into every system prompt) returns a date fixed per run, so the
  same data encodes to the same tokens whichever day a job runs.

A conversation the template refuses (`raise_exception`, or an error inside the template) raises `TemplateRejected`
with the template's own message.
"""

from __future__ import annotations

import datetime
import json
import re
from typing import Optional, Sequence

import jinja2
# Private helpers of transformers 5 (pinned): the compiled-template cache apply_chat_template uses, and its copying
# of reasoning_content under the names other templates read. The public render_jinja_template turns every extra
# argument into plain data, so it cannot hand a template a fixed-date strftime_now.
from transformers.utils.chat_template_utils import _alias_reasoning_fields, _compile_jinja_template

from raysft.data.errors import DataError

__all__ = [
    "DEFAULT_CHAT_TEMPLATE",
    "ChatTemplateError",
    "Renderer",
    "TemplateRejected",
    "chat_template_of",
    "split_reasoning",
]

# ChatML, used when a tokenizer ships no chat template of its own. Every turn ends with <|im_end|>,
# which is also the EOS token the model learns to emit after an assistant answer.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_THINK = re.compile(r"\s*<think>(.*?)</think>\s*", re.DOTALL)
# A template that appends the arguments to a string ('...' + tool['function']['arguments']) needs text.
_ARGUMENTS_AS_TEXT = re.compile(r"""\[\s*['"]arguments['"]\s*\]\s*\+|\.arguments\s*\+""")
# A template that tells a tool-call turn by its missing content (DeepSeek: message['content'] is none).
_CONTENT_NONE = re.compile(r"""content['"]?\]?\s+is\s+none""")
# Errors a template raises on a conversation it cannot render: raise_exception() gives TemplateError; templates
# that index or concatenate fields the conversation lacks give the others.
_RENDER_ERRORS = (jinja2.TemplateError, TypeError, ValueError, KeyError, IndexError, AttributeError)


class ChatTemplateError(DataError):
    """The tokenizer's chat template cannot train this data (e.g. tool calls without tool support)."""


class TemplateRejected(DataError):
    """The chat template refuses one conversation; `message` is the template's own reason."""

    code = "template_rejected"

    def __init__(self, message: str):
        super().__init__(f"the chat template rejects this conversation: {message}")
        self.message = message


def chat_template_of(tokenizer) -> str:
    """The chat template used for `tokenizer`.

    Args:
        tokenizer: a transformers tokenizer.

    Returns:
        The tokenizer's own template, or ``DEFAULT_CHAT_TEMPLATE`` (ChatML) when it has none.
    """
    if not tokenizer.chat_template:
        return DEFAULT_CHAT_TEMPLATE
    return tokenizer.get_chat_template()


def split_reasoning(message: dict) -> tuple[str, str]:
    """(reasoning, answer) of an assistant message: its `reasoning_content`, or a leading <think> block."""
    content = message.get("content") or ""
    reasoning = message.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning.strip():
        return reasoning, content
    match = _THINK.match(content)
    if match:
        return match.group(1), content[match.end():]
    return "", content


class Renderer:
    """Renders conversations with one tokenizer's chat template (compiled once by transformers, then cached).

    Args:
        tokenizer: a transformers tokenizer.
        date: the day `strftime_now` reports (default today); fix it per run.
    """

    def __init__(self, tokenizer, date: Optional[datetime.date] = None):
        self.tokenizer = tokenizer
        self.template = chat_template_of(tokenizer)
        self.name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        self.date = date or datetime.date.today()
        self.supports_tools = "tool_calls" in self.template
        self._reasoning_field = "reasoning_content" in self.template
        self._arguments_as_text = bool(_ARGUMENTS_AS_TEXT.search(self.template))
        self._content_none = bool(_CONTENT_NONE.search(self.template))
        specials = {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
        if tokenizer.eos_token:
            specials.add(tokenizer.eos_token)
        self.markers = tuple(sorted(specials, key=len, reverse=True))
        """Special-token strings that can close a turn (<|im_end|>, <|eot_id|>, </s>, <end_of_turn>...)."""
        day = datetime.datetime.combine(self.date, datetime.time())
        self._context = {**tokenizer.special_tokens_map, "strftime_now": day.strftime}
        self._compiled = _compile_jinja_template(self.template)

    def render(self, messages: Sequence[dict], tools: Optional[list], generation_prompt: bool) -> str:
        """The template's text for `messages` (and `tools`), with the generation prompt when asked.

        Raises:
            TemplateRejected: the template refuses the conversation.
        """
        return self.render_prepared(self.prepare(messages), tools, generation_prompt)

    def prepare(self, messages: Sequence[dict]) -> list[dict]:
        """`messages` as the template is given them (`template_message`, reasoning aliased): each message on its
        own, so the prepared messages of a conversation serve every prefix of it (`render_prepared(chat[:i])`)."""
        return _alias_reasoning_fields([self.template_message(m) for m in messages])

    def render_prepared(self, chat: Sequence[dict], tools: Optional[list], generation_prompt: bool) -> str:
        """`render` of messages `prepare` already made template-ready.

        Raises:
            TemplateRejected: the template refuses the conversation.
        """
        try:
            return self._compiled.render(messages=chat, tools=tools or None, documents=None,
                                         add_generation_prompt=generation_prompt, **self._context)
        except _RENDER_ERRORS as e:
            raise TemplateRejected(_one_line(e)) from None

    def template_message(self, message: dict) -> dict:
        """`message` as this template reads it: no `weight`; tool-call arguments as text or mapping, as the template
        expects; reasoning in its own field where the template has one, else inlined as <think>...</think>."""
        out = {k: v for k, v in message.items() if k != "weight"}
        if message["role"] != "assistant":
            return out
        if message.get("tool_calls"):
            out["tool_calls"] = [self._call(c) for c in message["tool_calls"]]
            if not (out.get("content") or "").strip():
                out["content"] = None if self._content_none else ""
        reasoning, answer = split_reasoning(message)
        if not reasoning:
            out.pop("reasoning_content", None)
        elif self._reasoning_field:
            out["reasoning_content"], out["content"] = reasoning, answer
        else:
            out.pop("reasoning_content", None)
            out["content"] = f"<think>\n{reasoning.strip()}\n</think>\n\n{answer.lstrip()}"
        return out

    def _call(self, call: dict) -> dict:
        function = dict(call["function"])
        arguments = function.get("arguments")
        if self._arguments_as_text and not isinstance(arguments, str):
            function["arguments"] = json.dumps(arguments, ensure_ascii=False)
        elif not self._arguments_as_text and isinstance(arguments, str):
            function["arguments"] = json.loads(arguments)
        return {"type": "function", **call, "function": function}


def _one_line(error: Exception) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."
