"""Chat templating and loss masks (see DESIGN.md decision 2).

Loss masks are correct by construction: a conversation is rendered with the tokenizer's chat template prefix by
prefix (messages[:i], then messages[:i+1]), each newly added piece of text is tokenized on its own and the pieces
are concatenated. For an assistant turn the prefix is rendered with ``add_generation_prompt=True`` so the assistant
header belongs to the prompt; the piece that follows is the assistant content and its end-of-turn token
(``<|im_end|>`` for ChatML), which is the span trained on. ``{% generation %}`` tags are never needed.

BOS: the rendered template is authoritative. Pieces are tokenized with ``add_special_tokens=False``, so a BOS
appears only where the template writes one. That is what ``apply_chat_template(tokenize=True)`` and chat serving
(vLLM, TGI) feed the model, so the trained adapter sees at training time what it sees when served.
SentencePiece-style tokenizers that prefix every encoded string with a space get each piece encoded after a
newline that is then stripped, so no space appears inside the chat that the rendered text does not have.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Iterable, Literal, Sequence

from transformers.utils.chat_template_utils import render_jinja_template

__all__ = [
    "DEFAULT_CHAT_TEMPLATE",
    "ChatTemplateError",
    "EncodeResult",
    "chat_template_of",
    "encode_conversation",
    "encode_dataset",
    "encode_prompt",
]

# ChatML, used when a tokenizer ships no chat template of its own. Every turn ends with <|im_end|>,
# which is also the EOS token the model learns to emit after an assistant answer.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_IGNORE_INDEX = -100
LossOn = Literal["assistant", "last_assistant", "all"]
OnTooLong = Literal["drop", "truncate"]
Status = Literal["ok", "truncated", "dropped_too_long", "dropped_no_target"]

# A rendered piece of the conversation: its text and the index of the assistant message it is the answer of
# (-1 for prompt text: system/user turns, headers, the whitespace a template writes between turns).
_Segment = tuple[str, int]

# Tokenizers that put a prefix space in front of every encoded string (SentencePiece style), looked up once each.
_PREFIX_SPACE: "weakref.WeakKeyDictionary[object, bool]" = weakref.WeakKeyDictionary()


class ChatTemplateError(ValueError):
    """A tokenizer's chat template cannot be used to build loss masks; the message names the tokenizer and fix."""


@dataclass(frozen=True)
class EncodeResult:
    """One encoded conversation.

    Attributes:
        example: ``{"input_ids": [...], "labels": [...]}`` (labels -100 where not trained), or None when dropped.
        status: "ok", "truncated", "dropped_too_long" or "dropped_no_target".
        n_tokens: tokens in ``example``; for a dropped conversation, tokens of its full encoding.
        n_trained: labelled tokens in ``example`` (0 when dropped).
    """

    example: dict[str, list[int]] | None
    status: Status
    n_tokens: int
    n_trained: int


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


def encode_conversation(
    tokenizer,
    messages: Sequence[dict],
    *,
    max_seq_len: int,
    loss_on: LossOn = "assistant",
    on_too_long: OnTooLong = "drop",
) -> EncodeResult:
    """Tokenize one conversation and label the tokens to train on.

    Args:
        tokenizer: a transformers tokenizer; its chat template (or ChatML) renders the conversation.
        messages: ``[{"role": "system"|"user"|"assistant", "content": str}, ...]``.
        max_seq_len: most tokens an example may have.
        loss_on: "assistant" labels every assistant turn, "last_assistant" only the final one, "all" every token
            but the first (which nothing before it predicts). An assistant turn's label span is its content and
            its end-of-turn token, never the header.
        on_too_long: "drop" drops a conversation longer than `max_seq_len`; "truncate" keeps its first
            `max_seq_len` tokens, and drops it as "dropped_no_target" if no labelled token is left.

    Returns:
        The example with its status and token counts.

    Raises:
        ChatTemplateError: the template renders earlier turns differently depending on what follows.
    """
    template = chat_template_of(tokenizer)
    segments = _segments(tokenizer, template, messages)
    pieces = _tokenize(tokenizer, [text for text, _ in segments])
    return _assemble(pieces, segments, _trained_turns(messages, loss_on), max_seq_len, on_too_long)


def encode_prompt(tokenizer, messages: Sequence[dict]) -> list[int]:
    """Tokens that prompt the model for the final assistant message, for greedy generation in evaluation.

    The result is exactly the prefix of ``encode_conversation(tokenizer, messages, ...)["input_ids"]`` before the
    final assistant span, so evaluation prompts match what training showed the model.

    Args:
        tokenizer: a transformers tokenizer.
        messages: a conversation; when it has no assistant message, all of it is the prompt.

    Returns:
        Token ids of the messages before the final assistant message, ending with the assistant header.
    """
    last = _last_assistant(messages)
    prefix = messages if last is None else messages[:last]
    segments = _segments(tokenizer, chat_template_of(tokenizer), prefix, generation_prompt=True)
    return [tok for piece in _tokenize(tokenizer, [text for text, _ in segments]) for tok in piece]


def encode_dataset(
    tokenizer,
    conversations: Iterable[Sequence[dict]],
    *,
    max_seq_len: int,
    loss_on: LossOn = "assistant",
    on_too_long: OnTooLong = "drop",
) -> tuple[list[dict[str, list[int]]], dict[str, float]]:
    """Encode many conversations (see `encode_conversation`) and count what happened to them.

    Args:
        tokenizer: a transformers tokenizer.
        conversations: the conversations.
        max_seq_len: most tokens an example may have.
        loss_on: which tokens are trained on.
        on_too_long: "drop" or "truncate".

    Returns:
        The kept examples in input order, and counts: "examples" (seen), "kept", "truncated",
        "dropped_too_long", "dropped_no_target", "tokens" and "trained_tokens" (over kept examples) and
        "trained_fraction" (trained_tokens / tokens, 0.0 when nothing was kept).
    """
    template = chat_template_of(tokenizer)
    conversations = list(conversations)
    all_segments = [_segments(tokenizer, template, messages) for messages in conversations]
    # One batched tokenizer call: the Rust tokenizer's per-call overhead dominates on short segments.
    flat = _tokenize(tokenizer, [text for segments in all_segments for text, _ in segments])
    counts = dict.fromkeys(
        ("examples", "kept", "truncated", "dropped_too_long", "dropped_no_target", "tokens", "trained_tokens"), 0
    )
    kept, start = [], 0
    for messages, segments in zip(conversations, all_segments):
        pieces = flat[start : start + len(segments)]
        start += len(segments)
        result = _assemble(pieces, segments, _trained_turns(messages, loss_on), max_seq_len, on_too_long)
        counts["examples"] += 1
        if result.status in ("dropped_too_long", "dropped_no_target"):
            counts[result.status] += 1
            continue
        counts["truncated"] += result.status == "truncated"
        counts["kept"] += 1
        counts["tokens"] += result.n_tokens
        counts["trained_tokens"] += result.n_trained
        kept.append(result.example)
    counts["trained_fraction"] = counts["trained_tokens"] / counts["tokens"] if counts["tokens"] else 0.0
    return kept, counts


def _last_assistant(messages: Sequence[dict]) -> int | None:
    return next((i for i in range(len(messages) - 1, -1, -1) if messages[i]["role"] == "assistant"), None)


def _trained_turns(messages: Sequence[dict], loss_on: LossOn) -> set[int] | None:
    """Indices of the assistant messages whose spans are labelled; None means every token ("all")."""
    if loss_on == "all":
        return None
    if loss_on == "last_assistant":
        last = _last_assistant(messages)
        return set() if last is None else {last}
    if loss_on == "assistant":
        return {i for i, m in enumerate(messages) if m["role"] == "assistant"}
    raise ValueError(f"loss_on={loss_on!r}: use 'assistant', 'last_assistant' or 'all'")


def _render(tokenizer, template: str, messages: Sequence[dict], generation_prompt: bool) -> str:
    # render_jinja_template is what apply_chat_template calls; used directly because it also renders an empty
    # prefix (a conversation that opens with an assistant turn) and skips the tokenizer-call overhead.
    rendered, _ = render_jinja_template(
        conversations=[list(messages)],
        chat_template=template,
        add_generation_prompt=generation_prompt,
        **tokenizer.special_tokens_map,
    )
    return rendered[0]


def _segments(
    tokenizer, template: str, messages: Sequence[dict], generation_prompt: bool = False
) -> list[_Segment]:
    """Split the rendered conversation into prompt pieces and assistant answers (content + end-of-turn)."""
    if not messages and not generation_prompt:
        raise ValueError("conversation has no messages: give at least one user and one assistant message")
    end_markers = _end_markers(tokenizer)
    segments: list[_Segment] = []
    prev, pending = "", ""  # pending: prompt text not yet emitted (e.g. the newline after an <|im_end|>)
    for i, message in enumerate(messages):
        if message["role"] == "assistant":
            head = _extend(tokenizer, prev, _render(tokenizer, template, messages[:i], True), i)
            full = _extend(tokenizer, head, _render(tokenizer, template, messages[: i + 1], False), i)
            answer = full[len(head) :]
            cut = _end_of_turn(answer, message["content"], end_markers)
            segments.append((pending + head[len(prev) :], -1))
            segments.append((answer[:cut], i))
            pending = answer[cut:]
        else:
            full = _extend(tokenizer, prev, _render(tokenizer, template, messages[: i + 1], False), i)
            pending += full[len(prev) :]
        prev = full
    if generation_prompt:
        head = _extend(tokenizer, prev, _render(tokenizer, template, messages, True), len(messages))
        pending += head[len(prev) :]
    segments.append((pending, -1))
    return [s for s in segments if s[0]]


def _extend(tokenizer, shorter: str, longer: str, i: int) -> str:
    """Return `longer` after checking that the render of a shorter prefix is a string prefix of it."""
    if longer.startswith(shorter):
        return longer
    at = next((k for k, (a, b) in enumerate(zip(shorter, longer)) if a != b), min(len(shorter), len(longer)))
    name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    raise ChatTemplateError(
        f"the chat template of tokenizer {name!r} is not prefix-stable: the conversation's first {i} messages "
        f"rendered alone are not a prefix of the render that goes on with message {i} (0-based; they differ at "
        f"character {at}: "
        f"{shorter[at:at + 40]!r} vs {longer[at:at + 40]!r}). Loss masks are built by rendering the conversation "
        "prefix by prefix, so earlier turns must render the same whatever follows them. Fix the tokenizer's "
        "chat_template (remove logic that depends on which message is last, such as dropping earlier reasoning), "
        "or set tokenizer.chat_template = raysft.data.template.DEFAULT_CHAT_TEMPLATE (ChatML)."
    )


def _end_markers(tokenizer) -> tuple[str, ...]:
    """Special-token strings that can close an assistant turn (<|im_end|>, <|eot_id|>, </s>, <end_of_turn>...)."""
    specials = {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
    if tokenizer.eos_token:
        specials.add(tokenizer.eos_token)
    return tuple(specials)


def _end_of_turn(answer: str, content: str, end_markers: tuple[str, ...]) -> int:
    """Index just past the end-of-turn marker in the rendered `answer` (all of it when there is none).

    The search starts after the content (when the template kept it verbatim or trimmed), so a special token
    written inside the content is not mistaken for the end of the turn.
    """
    start = 0
    for probe in (content, content.strip()):
        at = answer.find(probe) if probe else -1
        if at >= 0:
            start = at + len(probe)
            break
    ends = [(at, marker) for marker in end_markers if (at := answer.find(marker, start)) >= 0]
    if not ends:
        return len(answer)
    at, marker = min(ends)
    return at + len(marker)


def _tokenize(tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of each text on its own, without special tokens added around it."""
    if not texts:
        return []
    if not _adds_prefix_space(tokenizer):
        return tokenizer(texts, add_special_tokens=False)["input_ids"]
    # SentencePiece-style tokenizers put a prefix space in front of every string, which a piece taken from the
    # middle of a chat does not have: encode it after a newline and strip the newline (as transformers'
    # encode_marked_chat does). Costs a second encode for the texts where the newline merges with the piece.
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
    out = []
    for text, ids in zip(texts, tokenizer(["\n" + t for t in texts], add_special_tokens=False)["input_ids"]):
        if ids[: len(newline)] == newline:
            out.append(ids[len(newline) :])
        else:
            out.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    return out


def _adds_prefix_space(tokenizer) -> bool:
    try:
        return _PREFIX_SPACE[tokenizer]
    except (KeyError, TypeError):
        pass
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
    after_newline = tokenizer("\na", add_special_tokens=False)["input_ids"]
    adds = after_newline[: len(newline)] == newline and after_newline[len(newline) :] != plain
    try:
        _PREFIX_SPACE[tokenizer] = adds
    except TypeError:  # not weak-referenceable: checked again next time (three short encodes)
        pass
    return adds


def _assemble(
    pieces: list[list[int]],
    segments: list[_Segment],
    trained: set[int] | None,
    max_seq_len: int,
    on_too_long: OnTooLong,
) -> EncodeResult:
    input_ids: list[int] = []
    labels: list[int] = []
    for ids, (_, turn) in zip(pieces, segments):
        input_ids += ids
        labels += ids if trained is None or turn in trained else [_IGNORE_INDEX] * len(ids)
    if trained is None and labels:
        labels[0] = _IGNORE_INDEX  # nothing before the first token predicts it
    n_tokens = len(input_ids)
    status: Status = "ok"
    if n_tokens > max_seq_len:
        if on_too_long == "drop":
            return EncodeResult(None, "dropped_too_long", n_tokens, 0)
        if on_too_long != "truncate":
            raise ValueError(f"on_too_long={on_too_long!r}: use 'drop' or 'truncate'")
        input_ids, labels, status = input_ids[:max_seq_len], labels[:max_seq_len], "truncated"
    n_trained = sum(label != _IGNORE_INDEX for label in labels)
    if n_trained == 0:
        return EncodeResult(None, "dropped_no_target", n_tokens, 0)
    return EncodeResult({"input_ids": input_ids, "labels": labels}, status, len(input_ids), n_trained)
