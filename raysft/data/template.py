"""Chat templating and loss masks: train what serving sends (see DESIGN.md decision 2).

For every trained assistant turn i the prompt is exactly ``render(messages[:i], add_generation_prompt=True)``,
what vLLM / transformers send at inference, and the target is that turn's answer as the template renders it in
``render(messages[:i+1])``, through its end-of-turn token. Where the template puts nothing after the answer (GLM-4),
the tokenizer's EOS is appended to the target so the model still learns to stop (warned once).

When the full rendering holds every trained turn's prompt and answer in place (ChatML, Llama, gemma, ...), the
conversation is one sequence with several trained spans. When it does not (Qwen3 adds an empty <think> block only
to the final turn, DeepSeek-R1's generation prompt opens <think> that rendered turns lack, Mistral moves the system
prompt into the last user message, Phi-3.5 ends a non-generation render with EOS), the conversation is split into
one example per trained turn, each with its serving-time prompt; the counts say how many and why. ``{% generation
%}`` tags are never needed.

Tokens: pieces are tokenized with ``add_special_tokens=False``, so a BOS appears only where the template writes one,
as in ``apply_chat_template(tokenize=True)``. SentencePiece-style tokenizers that prefix every encoded string with a
space get each piece encoded after a newline that is then stripped.
"""

from __future__ import annotations

import datetime
import warnings
import weakref
from dataclasses import dataclass
from typing import Iterable, Iterator, Literal, Optional, Sequence

from raysft.data.render import (
    DEFAULT_CHAT_TEMPLATE,
    ChatTemplateError,
    Renderer,
    TemplateRejected,
    chat_template_of,
    split_reasoning,
)

__all__ = [
    "DEFAULT_CHAT_TEMPLATE",
    "ChatTemplateError",
    "EncodeResult",
    "TemplateRejected",
    "chat_template_of",
    "encode_conversation",
    "count_result",
    "encode_dataset",
    "encode_each",
    "encoding_warnings",
    "encode_final_turn",
    "end_of_turn_ids",
    "new_counts",
]

_IGNORE_INDEX = -100
LossOn = Literal["assistant", "last_assistant", "all"]
OnTooLong = Literal["drop", "truncate"]
Status = Literal["ok", "truncated", "dropped_too_long", "dropped_no_target", "template_rejected"]
# Why a conversation became one example per trained turn.
SPLIT_NOT_PREFIX = "renders_turns_differently"
SPLIT_EOS = "eos_appended_mid_conversation"
# A generation prompt ending like this opens a reasoning block the rendered turn may not have (DeepSeek-R1).
_OPEN_THINK = "<think>\n"

# A rendered piece: its text (None: the tokenizer's EOS token) and the message index it is the answer of
# (-1 for prompt text, -2 for "train on every token").
_Piece = tuple[Optional[str], int]

# Tokenizers that put a prefix space in front of every encoded string (SentencePiece style), looked up once each.
_PREFIX_SPACE: "weakref.WeakKeyDictionary[object, bool]" = weakref.WeakKeyDictionary()
_WARNED: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class EncodeResult:
    """One encoded conversation: one example, or one per trained turn when the template needs that.

    Attributes:
        examples: ``[{"input_ids": [...], "labels": [...]}, ...]`` (labels -100 where not trained); empty when dropped.
        status: "ok", "truncated" (some example cut to max_seq_len), "dropped_too_long", "dropped_no_target" or
            "template_rejected".
        n_tokens: tokens in `examples`; for a dropped conversation, tokens of its full encoding.
        n_trained: labelled tokens in `examples` (0 when dropped).
        split: why the conversation was split into one example per trained turn, None when it was not.
        eos_appended: the template writes nothing after an answer, so EOS was appended to the targets.
        reasoning: a trained turn carries reasoning; reasoning_dropped: the template left some of it out.
        error: the template's message when status is "template_rejected".
    """

    examples: list[dict[str, list[int]]]
    status: Status
    n_tokens: int
    n_trained: int
    split: Optional[str] = None
    eos_appended: bool = False
    reasoning: bool = False
    reasoning_dropped: bool = False
    error: Optional[str] = None


@dataclass
class _Turn:
    index: int
    prompt: str  # the serving-time prompt text
    answer: str  # the target text, through the end-of-turn token
    eos: bool  # the template writes nothing after the answer: EOS is appended
    reasoning: bool = False
    reasoning_dropped: bool = False


def encode_conversation(
    tokenizer,
    messages: Sequence[dict],
    *,
    max_seq_len: int,
    loss_on: LossOn = "assistant",
    on_too_long: OnTooLong = "drop",
    tools: Optional[list] = None,
    date: Optional[datetime.date] = None,
) -> EncodeResult:
    """Tokenize one conversation and label the tokens to train on.

    Args:
        tokenizer: a transformers tokenizer; its chat template (or ChatML) renders the conversation.
        messages: ``[{"role": "system"|"user"|"assistant"|"tool", "content": str, ...}, ...]``; assistant messages
            may carry ``reasoning_content``, ``tool_calls`` and ``weight`` (0: context, not trained).
        max_seq_len: most tokens an example may have.
        loss_on: "assistant" labels every assistant turn of weight 1, "last_assistant" only the final one, "all"
            every token but the first. An assistant turn's label span is its answer and end-of-turn token.
        on_too_long: "drop" drops an example longer than `max_seq_len`; "truncate" keeps its first `max_seq_len`
            tokens (dropped as "dropped_no_target" if no labelled token is left).
        tools: the conversation's OpenAI `tools` list (function schemas), given to the template.
        date: the day templates that print today's date see (default today).

    Returns:
        The examples with their status and token counts. A conversation the template rejects is returned with
        status "template_rejected" and the template's message in `error`.

    Raises:
        ChatTemplateError: the conversation uses tools and the template has no tool support.
    """
    return _Encoder(Renderer(tokenizer, date)).encode(messages, tools, max_seq_len, loss_on, on_too_long)


def encode_final_turn(
    tokenizer, messages: Sequence[dict], tools: Optional[list] = None, date: Optional[datetime.date] = None
) -> tuple[list[int], list[int]]:
    """The serving prompt of the final assistant message and the target training teaches for it, as token ids.

    Args:
        tokenizer: a transformers tokenizer.
        messages: a conversation; when it has no assistant message, all of it is the prompt and the target is empty.
        tools: the conversation's tools list.
        date: the day templates that print today's date see.

    Returns:
        (prompt ids: ``apply_chat_template(messages[:last], add_generation_prompt=True)`` tokenized, target ids).
    """
    renderer = Renderer(tokenizer, date)
    last = _last_assistant(messages)
    if last is None:
        return _tokenize(tokenizer, [renderer.render(messages, tools, True)])[0], []
    turn = _Encoder(renderer).turn(messages, tools, last)
    prompt, answer = _tokenize(tokenizer, [turn.prompt, turn.answer])
    return prompt, answer + ([tokenizer.eos_token_id] if turn.eos else [])


def end_of_turn_ids(tokenizer, generation_eos=None) -> list[int]:
    """Every token id that ends a model's turn: its generation_config eos ids, the template's end-of-turn token, EOS.

    Args:
        tokenizer: a transformers tokenizer.
        generation_eos: ``generation_config.eos_token_id`` (an id, a list of ids, or None).

    Returns:
        The ids generation must stop at (gemma's <end_of_turn>, Phi's <|end|>, Llama's <|eot_id|>, ...), EOS first.
    """
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    ids += generation_eos if isinstance(generation_eos, (list, tuple)) else [generation_eos] * (generation_eos is not None)
    renderer = Renderer(tokenizer)
    probe = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]
    try:
        turn = _Encoder(renderer).turn(probe, None, 1)
        ends = [m for m in renderer.markers if turn.answer.endswith(m)]
        ids += [tokenizer.convert_tokens_to_ids(m) for m in ends[:1]]
    except TemplateRejected:
        pass  # a template that refuses the probe: generation_config and EOS still stop it
    return list(dict.fromkeys(i for i in ids if isinstance(i, int) and i >= 0))


def encode_dataset(
    tokenizer,
    conversations: Iterable,
    *,
    max_seq_len: int,
    loss_on: LossOn = "assistant",
    on_too_long: OnTooLong = "drop",
    date: Optional[datetime.date] = None,
) -> tuple[list[dict[str, list[int]]], dict]:
    """Encode many conversations (see `encode_conversation`) and count what happened to them.

    Args:
        tokenizer: a transformers tokenizer.
        conversations: message lists, or ``{"messages": [...], "tools": [...]}`` dicts.
        max_seq_len: most tokens an example may have.
        loss_on: which tokens are trained on.
        on_too_long: "drop" or "truncate".
        date: the day templates that print today's date see (default today).

    Returns:
        The kept examples in input order, and counts: "examples" (conversations seen), "kept", "truncated",
        "dropped_too_long", "dropped_no_target", "template_rejected", "split" (conversations made one example per
        trained turn) with "split_reasons" ({reason: n}), "rows" (examples produced), "eos_appended",
        "reasoning" / "reasoning_dropped" (conversations), "tokens" and "trained_tokens" (over kept examples),
        "trained_fraction" (0.0 when nothing was kept) and "warnings" (sentences for the data report).

    Raises:
        ChatTemplateError: some conversation uses tools and the template has no tool support.
    """
    counts = new_counts()
    kept: list[dict] = []
    for result in encode_each(tokenizer, conversations, max_seq_len=max_seq_len, loss_on=loss_on,
                              on_too_long=on_too_long, date=date):
        count_result(counts, result)
        kept += result.examples
    counts["trained_fraction"] = counts["trained_tokens"] / counts["tokens"] if counts["tokens"] else 0.0
    counts["warnings"] = encoding_warnings(counts, tokenizer.eos_token)
    return kept, counts


def encode_each(tokenizer, conversations: Iterable, *, max_seq_len: int, loss_on: LossOn = "assistant",
                on_too_long: OnTooLong = "drop", date: Optional[datetime.date] = None) -> Iterator[EncodeResult]:
    """`encode_conversation` for many conversations with one renderer (the template is compiled once)."""
    encoder = _Encoder(Renderer(tokenizer, date))
    for conversation in conversations:
        messages, tools = _unpack(conversation)
        yield encoder.encode(messages, tools, max_seq_len, loss_on, on_too_long)


def new_counts() -> dict:
    """Zeroed encoding counts (the keys `encode_dataset` documents, without the derived ones)."""
    counts: dict = dict.fromkeys(
        ("examples", "kept", "truncated", "dropped_too_long", "dropped_no_target", "template_rejected", "split",
         "rows", "eos_appended", "reasoning", "reasoning_dropped", "tokens", "trained_tokens"), 0)
    counts["split_reasons"] = {}
    return counts


def count_result(counts: dict, result: EncodeResult, times: int = 1) -> None:
    """Add one encoded conversation, seen `times` times (a weighted or mixed-in copy), to `counts`."""
    counts["examples"] += times
    for key in ("eos_appended", "reasoning", "reasoning_dropped"):
        counts[key] += getattr(result, key) * times
    if result.split:
        counts["split"] += times
        counts["split_reasons"][result.split] = counts["split_reasons"].get(result.split, 0) + times
    if not result.examples:
        counts[result.status] += times
        return
    counts["truncated"] += (result.status == "truncated") * times
    counts["kept"] += times
    counts["rows"] += len(result.examples) * times
    counts["tokens"] += result.n_tokens * times
    counts["trained_tokens"] += result.n_trained * times


def _unpack(conversation) -> tuple[Sequence[dict], Optional[list]]:
    if isinstance(conversation, dict):
        return conversation["messages"], conversation.get("tools")
    return conversation, None


def _last_assistant(messages: Sequence[dict]) -> int | None:
    return next((i for i in range(len(messages) - 1, -1, -1) if messages[i]["role"] == "assistant"), None)


def _trained_turns(messages: Sequence[dict], loss_on: LossOn) -> list[int]:
    """Indices of the assistant messages whose answers are labelled (weight 0 turns are context)."""
    if loss_on == "last_assistant":
        last = _last_assistant(messages)
        return [] if last is None or messages[last].get("weight", 1) == 0 else [last]
    if loss_on in ("assistant", "all"):
        return [i for i, m in enumerate(messages) if m["role"] == "assistant" and m.get("weight", 1) != 0]
    raise ValueError(f"loss_on={loss_on!r}: use 'assistant', 'last_assistant' or 'all'")


def _uses_tools(messages: Sequence[dict], tools: Optional[list]) -> bool:
    return bool(tools) or any(m["role"] == "tool" or m.get("tool_calls") for m in messages)


class _Encoder:
    """Turns conversations into examples with one renderer; remembers what the data report must say."""

    def __init__(self, renderer: Renderer):
        self.r = renderer
        self.tokenizer = renderer.tokenizer

    def encode(self, messages, tools, max_seq_len: int, loss_on: LossOn, on_too_long: OnTooLong) -> EncodeResult:
        if not messages:
            raise ValueError("conversation has no messages: give at least one user and one assistant message")
        if _uses_tools(messages, tools) and not self.r.supports_tools:
            raise ChatTemplateError(
                f"the chat template of tokenizer {self.r.name!r} has no tool support (it never reads tool_calls), "
                "but the data has tools, tool calls or tool messages; use a model whose template renders tools "
                "(Qwen2.5/Qwen3, Llama 3.1+, Mistral, DeepSeek-R1) or remove the tool turns")
        trained = _trained_turns(messages, loss_on)
        try:
            chat = self.r.prepare(messages)  # once: every render below is of a prefix of it
            turns = [self.turn(messages, tools, i, chat) for i in trained]
            full = self.r.render_prepared(chat, tools, False)
        except TemplateRejected as e:
            return EncodeResult([], "template_rejected", 0, 0, error=e.message)
        flags = {"eos_appended": any(t.eos for t in turns), "reasoning": any(t.reasoning for t in turns),
                 "reasoning_dropped": any(t.reasoning_dropped for t in turns)}
        if loss_on == "all":
            last = turns[-1] if turns and turns[-1].index == len(messages) - 1 else None
            pieces: list[list[_Piece]] = [[(full, -2)] + ([(None, -2)] if last and last.eos else [])]
            split = None
        else:
            pieces, split = self._pieces(messages, turns, full)
        return self._assemble(pieces, max_seq_len, on_too_long, split, flags)

    def turn(self, messages: Sequence[dict], tools, i: int, chat: Optional[list[dict]] = None) -> _Turn:
        """The serving prompt and the rendered answer (through its end-of-turn token) of assistant message i;
        `chat` is `messages` as the renderer prepared them, when the caller has them already."""
        chat = self.r.prepare(messages) if chat is None else chat
        prompt = self.r.render_prepared(chat[:i], tools, True)
        done = self.r.render_prepared(chat[: i + 1], tools, False)
        start = self._shared(prompt, done)
        rest = done[start:]
        cut, eos = self._end_of_turn(messages, tools, i, rest, start, chat)
        answer = rest[:cut]
        reasoning, _ = split_reasoning(messages[i])
        if prompt[start:].endswith(_OPEN_THINK) and reasoning.strip() and reasoning.strip() not in answer:
            # The generation prompt opens <think> but the rendered turn drops the reasoning (DeepSeek-R1): the model
            # writes the reasoning next at serving time, so that is what it is trained on.
            answer = f"{reasoning.strip()}\n</think>\n\n{answer.lstrip()}"
        if eos:
            self._warn("eos", f"the chat template of {self.r.name!r} writes nothing after an assistant answer; "
                              f"raysft appends EOS {self.tokenizer.eos_token!r} to each trained answer")
        dropped = bool(reasoning.strip()) and reasoning.strip() not in answer
        return _Turn(i, prompt, answer, eos, bool(reasoning.strip()), dropped)

    def _shared(self, prompt: str, done: str) -> int:
        """Where the answer starts in `done`: after the text it shares with the serving prompt."""
        n = _common_prefix(prompt, done)
        if n < len(prompt):
            # The prompt goes on with text the rendered turn lacks (DeepSeek-R1's "<think>\n"): back off to the end
            # of the last special token, so a first answer character that equals the prompt's is not lost.
            ends = [prompt.rfind(m, 0, n) + len(m) for m in self.r.markers if 0 <= prompt.rfind(m, 0, n) <= n - len(m)]
            n = max(ends, default=n)
        return n

    def _end_of_turn(self, messages, tools, i: int, rest: str, start: int, chat: list[dict]) -> tuple[int, bool]:
        """(length of the answer in `rest`, whether EOS must be appended); `rest` is the render after the prompt.

        The end-of-turn text is what the template writes right after the content, found by rendering the content
        with a sentinel appended; its last occurrence in `rest` ends the turn, so a special-token string inside the
        content (or a template that rewrites the content) cannot cut the answer short.
        """
        content = messages[i].get("content")
        if isinstance(content, str) and content.strip():
            sentinel = "\ue000raysft-end\ue000"
            probe = chat[:i] + self.r.prepare([{**messages[i], "content": content + sentinel}])
            rendered = self.r.render_prepared(probe, tools, False)
            at = rendered.find(sentinel, start)
            if at >= 0:
                tail = rendered[at + len(sentinel):]
                hits = [(tail.find(m), m) for m in self.r.markers if m in tail]
                if not hits:
                    return (len(rest) - len(tail) if tail and rest.endswith(tail) else len(rest)), True
                at_marker, marker = min(hits, key=lambda h: (h[0], -len(h[1])))
                end_text = tail[: at_marker + len(marker)]
                found = rest.rfind(end_text)
                if found >= 0:
                    return found + len(end_text), False
        # No content to anchor on (a tool-call turn): the turn ends after the last special token in it.
        ends = [rest.rfind(m) + len(m) for m in self.r.markers if m in rest]
        return (max(ends), False) if ends else (len(rest), True)

    def _pieces(self, messages, turns: list[_Turn], full: str) -> tuple[list[list[_Piece]], Optional[str]]:
        """One sequence with a span per turn when `full` holds every prompt and answer in place, else one each."""
        seq: list[_Piece] = []
        pos, reason = 0, None
        for k, t in enumerate(turns):
            begin, end = len(t.prompt), len(t.prompt) + len(t.answer)
            if begin < pos or not full.startswith(t.prompt + t.answer):
                reason = SPLIT_NOT_PREFIX
                break
            if t.eos and (k < len(turns) - 1 or t.index < len(messages) - 1):
                reason = SPLIT_EOS
                break
            seq += [(full[pos:begin], -1), (t.answer, t.index)]
            pos = end
        if reason is None:
            tail = [(None, turns[-1].index)] if turns and turns[-1].eos else [(full[pos:], -1)]
            return [seq + tail], None
        return [[(t.prompt, -1), (t.answer, t.index)] + ([(None, t.index)] if t.eos else []) for t in turns], reason

    def _assemble(self, examples: list[list[_Piece]], max_seq_len, on_too_long, split, flags) -> EncodeResult:
        texts = [text for pieces in examples for text, _ in pieces if text]
        flat = iter(_tokenize(self.tokenizer, texts))
        kept, total, statuses = [], 0, []
        for pieces in examples:
            input_ids: list[int] = []
            labels: list[int] = []
            for text, turn in pieces:
                ids = [self.tokenizer.eos_token_id] if text is None else (next(flat) if text else [])
                input_ids += ids
                labels += ids if turn != -1 else [_IGNORE_INDEX] * len(ids)
            if pieces and pieces[0][1] == -2 and labels:
                labels[0] = _IGNORE_INDEX  # "all": nothing before the first token predicts it
            example, status = _fit(input_ids, labels, max_seq_len, on_too_long)
            statuses.append(status)
            if example is None:
                total += len(input_ids)
                continue
            kept.append(example)
        if not kept:
            status = "dropped_too_long" if "dropped_too_long" in statuses else "dropped_no_target"
            return EncodeResult([], status, total, 0, split, **flags)
        n_tokens = sum(len(e["input_ids"]) for e in kept)
        n_trained = sum(len(e["labels"]) - e["labels"].count(_IGNORE_INDEX) for e in kept)
        status = "truncated" if "truncated" in statuses else "ok"
        return EncodeResult(kept, status, n_tokens, n_trained, split, **flags)

    def _warn(self, key: str, message: str) -> None:
        if (self.r.template, key) not in _WARNED:
            _WARNED.add((self.r.template, key))
            warnings.warn(message, stacklevel=3)


def encoding_warnings(counts: dict, eos_token: str) -> list[str]:
    """Sentences for the data report from `encode_dataset`'s counts (also after adding up several calls' counts)."""
    out = []
    if counts["eos_appended"]:
        out.append(f"{counts['eos_appended']} conversations: the chat template writes nothing after an answer; "
                   f"EOS {eos_token!r} was appended to their trained answers")
    if counts["reasoning_dropped"]:
        out.append(f"{counts['reasoning_dropped']} conversations: the chat template drops the reasoning of a "
                   "trained turn, so that reasoning is not trained on")
    if counts["split"]:
        reasons = ", ".join(f"{n} {r}" for r, n in counts["split_reasons"].items())
        out.append(f"{counts['split']} conversations were split into one example per trained turn ({reasons})")
    return out


def _fit(input_ids, labels, max_seq_len: int, on_too_long: OnTooLong):
    status = "ok"
    if len(input_ids) > max_seq_len:
        if on_too_long == "drop":
            return None, "dropped_too_long"
        if on_too_long != "truncate":
            raise ValueError(f"on_too_long={on_too_long!r}: use 'drop' or 'truncate'")
        input_ids, labels, status = input_ids[:max_seq_len], labels[:max_seq_len], "truncated"
    if labels.count(_IGNORE_INDEX) == len(labels):
        return None, "dropped_no_target"
    return {"input_ids": input_ids, "labels": labels}, status


def _common_prefix(a: str, b: str) -> int:
    """Length of the longest common prefix of `a` and `b`, by comparisons in C: a render of a conversation's prefix
    usually is a prefix of the next render, and this runs several times per conversation."""
    if b.startswith(a):
        return len(a)
    lo, hi = 0, min(len(a), len(b))  # a[:lo] == b[:lo]; a[:hi + 1] != b[:hi + 1]
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if b.startswith(a[:mid]):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _tokenize(tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of each text on its own, without special tokens added around it (one batched call)."""
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
            out.append(ids[len(newline):])
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
    adds = after_newline[: len(newline)] == newline and after_newline[len(newline):] != plain
    try:
        _PREFIX_SPACE[tokenizer] = adds
    except TypeError:  # not weak-referenceable: checked again next time (three short encodes)
        pass
    return adds
