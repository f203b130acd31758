"""Guardrail filters over answers as clients receive them: recorded provider streams split anywhere, words
split across deltas, Responses' repeated full text and sequence numbers, blocking, byte-exact pass-through."""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Callable, Iterable
from typing import Any

import orjson
import pytest
from anthropic.types import RawMessageStreamEvent
from openai.types.chat import ChatCompletionChunk
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter, ValidationError

from gomodel_proxy.core.errors import GuardrailBlockedError
from gomodel_proxy.guardrails.answer_text import AnswerStreamEditor, MakeFilter, edit_answer_body
from gomodel_proxy.guardrails.interface import GuardedApi, TextFilter
from gomodel_proxy.guardrails.window import Match, WindowedFilter
from tests.support.fixtures import fixture_names, load_fixture, split_sse_events, sse_data

# -- filters -------------------------------------------------------------------------------------------------


def redacting(word: str = "secret", *, hold_back: int = 16) -> MakeFilter:
    """Filters replacing ``word`` (any case) by ``[X]``."""
    pattern = re.compile(re.escape(word), re.IGNORECASE)

    def scan(text: str) -> list[Match]:
        return [Match(m.start(), m.end(), "word", "[X]") for m in pattern.finditer(text)]

    return lambda: WindowedFilter(scan, lambda _: None, hold_back=hold_back)


def _upper_scan(text: str) -> list[Match]:
    return [Match(m.start(), m.end(), "word", m.group().upper()) for m in re.finditer(r"[^\W\d_]+", text)]


def upper_casing() -> TextFilter:
    """Upper-cases whole words, holding back 16 characters: changes nearly every delta."""
    return WindowedFilter(_upper_scan, lambda _: None, hold_back=16)


def blocking(word: str) -> MakeFilter:
    """Filters refusing the answer as soon as ``word`` is seen whole."""

    def refuse(_: Match) -> None:
        raise GuardrailBlockedError("words", "forbidden word", stage="output")

    pattern = re.compile(re.escape(word))
    return lambda: WindowedFilter(
        lambda text: [Match(m.start(), m.end(), "word") for m in pattern.finditer(text)], refuse, hold_back=16
    )


class Identity:
    """Lets everything through at once."""

    def feed(self, text: str) -> str:
        return text

    def finish(self) -> str:
        return ""


def apply(make: MakeFilter, text: str) -> str:
    """A filter run over a whole text at once: what every split of the text must come to."""
    text_filter = make()
    return text_filter.feed(text) + text_filter.finish()


# -- reading streams -----------------------------------------------------------------------------------------


def payloads(body: bytes) -> list[dict[str, Any]]:
    """The JSON data payloads of an SSE body, in order."""
    out = []
    for event in split_sse_events(body):
        data = sse_data(event)
        if data is not None and data.strip() != b"[DONE]":
            out.append(orjson.loads(data))
    return out


def delta_texts(api: GuardedApi, body: bytes) -> dict[Any, str]:
    """Each channel's text from the text deltas of an SSE body (channels whose text is empty left out)."""
    texts: dict[Any, str] = {}
    for payload in payloads(body):
        pieces: list[tuple[Any, Any]] = []
        if api == "chat":
            pieces = [(c.get("index"), (c.get("delta") or {}).get("content")) for c in payload.get("choices") or ()]
        elif api == "messages" and payload.get("type") == "content_block_delta":
            pieces = [(payload["index"], payload["delta"].get("text"))]
        elif api == "responses" and payload.get("type") == "response.output_text.delta":
            pieces = [((payload.get("item_id"), payload["content_index"]), payload["delta"])]
        for key, text in pieces:
            if isinstance(text, str) and text:
                texts[key] = texts.get(key, "") + text
    return texts


def run(api: GuardedApi, make: MakeFilter, pieces: Iterable[bytes]) -> tuple[bytes, AnswerStreamEditor]:
    editor = AnswerStreamEditor(api, make)
    out = [editor.feed(piece) for piece in pieces]
    out.append(editor.finish())
    return b"".join(out), editor


def split_at(body: bytes, points: Iterable[int]) -> list[bytes]:
    cuts = [0, *sorted(points), len(body)]
    return [body[a:b] for a, b in itertools.pairwise(cuts)]


# -- fixtures ------------------------------------------------------------------------------------------------

STREAMS: list[tuple[GuardedApi, str]] = [
    *[("chat", rel) for rel in fixture_names("openai/chat-completions", "stream-")],
    *[("chat", rel) for rel in fixture_names("groq/chat-completions", "stream-")],
    *[("chat", rel) for rel in fixture_names("openrouter/chat-completions", "stream-")],
    *[("responses", rel) for rel in fixture_names("openai/responses", "stream-")],
    *[("messages", rel) for rel in fixture_names("anthropic/messages", "stream-")],
]
BODIES: list[tuple[GuardedApi, str]] = [
    *[("chat", rel) for rel in fixture_names("openai/chat-completions", "nonstream-")],
    *[("chat", rel) for rel in fixture_names("groq/chat-completions", "nonstream-")],
    *[("chat", rel) for rel in fixture_names("openrouter/chat-completions", "nonstream-")],
    *[("responses", rel) for rel in fixture_names("openai/responses", "nonstream-")],
    *[("responses", rel) for rel in fixture_names("xai/responses", "nonstream-")],
    *[("messages", rel) for rel in fixture_names("anthropic/messages", "nonstream-")],
]
CHAT_FIXTURE = "openai/chat-completions/stream-text-no-usage-gpt4o-mini"
MAKERS: dict[str, MakeFilter] = {"upper": upper_casing, "redact-e": redacting("e", hold_back=4)}


def _ids(cases: list[tuple[GuardedApi, str]]) -> list[str]:
    return [rel for _, rel in cases]


@pytest.mark.parametrize(("api", "rel"), STREAMS, ids=_ids(STREAMS))
@pytest.mark.parametrize("maker", list(MAKERS))
def test_stream_text_is_the_filter_over_the_whole_text(api: GuardedApi, rel: str, maker: str) -> None:
    make = MAKERS[maker]
    body = load_fixture(rel).body
    out, editor = run(api, make, [body])
    expected = {key: apply(make, text) for key, text in delta_texts(api, body).items()}
    assert delta_texts(api, out) == {key: text for key, text in expected.items() if text}
    assert [text for text in editor.texts if text] == [text for text in expected.values() if text]


@pytest.mark.parametrize(("api", "rel"), STREAMS, ids=_ids(STREAMS))
def test_stream_split_anywhere_gives_the_same_bytes(api: GuardedApi, rel: str) -> None:
    body = load_fixture(rel).body
    whole, _ = run(api, upper_casing, [body])
    rng = random.Random(rel)
    for _ in range(12):
        points = rng.sample(range(1, len(body)), min(len(body) - 1, rng.choice([1, 5, 40, 400])))
        assert run(api, upper_casing, split_at(body, points))[0] == whole
    assert run(api, upper_casing, [body[i : i + 1] for i in range(len(body))])[0] == whole


@pytest.mark.parametrize(
    ("api", "rel"),
    [("chat", CHAT_FIXTURE), ("messages", "anthropic/messages/stream-text-haiku45")],
)
def test_stream_split_at_every_byte_position(api: GuardedApi, rel: str) -> None:
    body = load_fixture(rel).body
    whole, _ = run(api, upper_casing, [body])
    for cut in range(1, len(body)):
        assert run(api, upper_casing, [body[:cut], body[cut:]])[0] == whole, cut


@pytest.mark.parametrize(("api", "rel"), STREAMS, ids=_ids(STREAMS))
def test_identity_filter_passes_streams_byte_for_byte(api: GuardedApi, rel: str) -> None:
    body = load_fixture(rel).body
    assert run(api, Identity, [body])[0] == body


@pytest.mark.parametrize(("api", "rel"), STREAMS, ids=_ids(STREAMS))
def test_edited_streams_still_parse_with_the_sdk_models(api: GuardedApi, rel: str) -> None:
    adapters: dict[GuardedApi, Callable[[Any], object]] = {
        "chat": ChatCompletionChunk.model_validate,
        "responses": TypeAdapter(ResponseStreamEvent).validate_python,
        "messages": TypeAdapter(RawMessageStreamEvent).validate_python,
    }
    adapter = adapters[api]

    def invalid(body: bytes) -> set[str]:
        failing = set()
        for payload in payloads(body):
            try:
                adapter(payload)
            except ValidationError:
                failing.add(str(payload.get("type") or payload.get("object")))
        return failing

    body = load_fixture(rel).body
    assert invalid(run(api, upper_casing, [body])[0]) <= invalid(body)  # old formats the SDK no longer takes


@pytest.mark.parametrize(("api", "rel"), [case for case in STREAMS if case[0] == "responses"], ids=str)
def test_responses_full_text_events_carry_the_edited_text(api: GuardedApi, rel: str) -> None:
    body = load_fixture(rel).body
    out, _ = run(api, upper_casing, split_at(body, range(7, len(body), 97)))
    check_responses_stream(body, out)


def check_responses_stream(body: bytes, out: bytes) -> None:
    """Every event repeating a text repeats the deltas' text; sequence numbers rise by one from the first."""
    sent: dict[tuple[Any, Any], str] = {}
    for payload in payloads(out):
        kind = payload["type"]
        if kind == "response.output_text.delta":
            key = (payload["item_id"], payload["content_index"])
            sent[key] = sent.get(key, "") + payload["delta"]
        elif kind == "response.output_text.done":
            assert payload["text"] == sent[payload["item_id"], payload["content_index"]]
        elif kind == "response.content_part.done" and payload["part"]["type"] == "output_text":
            assert payload["part"]["text"] == sent[payload["item_id"], payload["content_index"]]
        elif kind == "response.output_item.done":
            for index, part in enumerate(payload["item"].get("content") or ()):
                if part["type"] == "output_text":
                    assert part["text"] == sent[payload["item"]["id"], index]
        elif kind in ("response.completed", "response.incomplete"):
            for item in payload["response"]["output"]:
                for index, part in enumerate(item.get("content") or ()):
                    if part["type"] == "output_text":
                        assert part["text"] == sent[item["id"], index]
    numbers = [p["sequence_number"] for p in payloads(out) if "sequence_number" in p]
    original = [p["sequence_number"] for p in payloads(body) if "sequence_number" in p]
    assert numbers == list(range(original[0], original[0] + len(numbers))) if original else not numbers


# -- synthetic streams: words split across deltas ------------------------------------------------------------


def chat_stream(deltas: list[str], *, choice: int = 0) -> bytes:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choices = [{"index": choice, "delta": delta, "logprobs": None, "finish_reason": finish}]
        payload = {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": choices,
        }
        return b"data: " + orjson.dumps({**payload, "obfuscation": "xyz"}) + b"\n\n"

    usage: dict[str, Any] = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    return b"".join(
        [
            chunk({"role": "assistant", "content": "", "refusal": None}),
            *[chunk({"content": text}) for text in deltas],
            chunk({}, "stop"),
            b"data: " + orjson.dumps({"id": "chatcmpl-1", "choices": [], "usage": usage}) + b"\n\n",
            b"data: [DONE]\n\n",
        ]
    )


def sse(kind: str, payload: dict[str, Any], *, eol: bytes = b"\n") -> bytes:
    return b"event: " + kind.encode() + eol + b"data: " + orjson.dumps({"type": kind, **payload}) + eol + eol


def messages_stream(deltas: list[str], *, eol: bytes = b"\n") -> bytes:
    message: dict[str, Any] = {"id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": "claude"}
    message |= {"stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 1, "output_tokens": 1}}
    return b"".join(
        [
            sse("message_start", {"message": message}, eol=eol),
            sse("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}, eol=eol),
            sse("ping", {}, eol=eol),
            *[
                sse("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": t}}, eol=eol)
                for t in deltas
            ],
            sse("content_block_stop", {"index": 0}, eol=eol),
            sse("message_delta", {"delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 5}}, eol=eol),
            sse("message_stop", {}, eol=eol),
        ]
    )


def responses_stream(deltas: list[str], *, numbered: bool = True) -> bytes:
    item_id = "msg_1"
    full = "".join(deltas)
    part = {"type": "output_text", "annotations": [], "logprobs": [], "text": full}
    item = {"id": item_id, "type": "message", "status": "completed", "role": "assistant", "content": [part]}
    response = {"id": "resp_1", "object": "response", "status": "completed", "model": "m", "output": [item]}
    where = {"item_id": item_id, "output_index": 0, "content_index": 0}
    events: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"response": {**response, "status": "in_progress", "output": []}}),
        ("response.output_item.added", {"output_index": 0, "item": {**item, "content": [], "status": "in_progress"}}),
        ("response.content_part.added", {**where, "part": {**part, "text": ""}}),
        *[("response.output_text.delta", {**where, "delta": t, "logprobs": [], "obfuscation": "ab"}) for t in deltas],
        ("response.output_text.done", {**where, "text": full, "logprobs": []}),
        ("response.content_part.done", {**where, "part": part}),
        ("response.output_item.done", {"output_index": 0, "item": item}),
        ("response.completed", {"response": response}),
    ]
    return b"".join(
        sse(kind, {**payload, "sequence_number": number} if numbered else payload)
        for number, (kind, payload) in enumerate(events)
    )


STREAM_BUILDERS: dict[GuardedApi, Callable[[list[str]], bytes]] = {
    "chat": chat_stream,
    "messages": messages_stream,
    "responses": responses_stream,
}
SPLIT_SECRET = ["The pass", "word is sec", "ret: do not share the s", "ecret."]


@pytest.mark.parametrize("api", list(STREAM_BUILDERS))
def test_word_split_across_deltas_is_replaced(api: GuardedApi) -> None:
    body = STREAM_BUILDERS[api](SPLIT_SECRET)
    out, editor = run(api, redacting(), [body])
    assert list(delta_texts(api, out).values()) == ["The password is [X]: do not share the [X]."]
    assert editor.texts == ["The password is [X]: do not share the [X]."]
    assert b"ecret" not in out
    for cut in range(1, len(body)):
        assert run(api, redacting(), [body[:cut], body[cut:]])[0] == out


@pytest.mark.parametrize("api", list(STREAM_BUILDERS))
def test_blocking_filter_propagates(api: GuardedApi) -> None:
    editor = AnswerStreamEditor(api, blocking("secret"))
    body = STREAM_BUILDERS[api](SPLIT_SECRET)
    with pytest.raises(GuardrailBlockedError, match="forbidden word"):
        editor.feed(body)


@pytest.mark.parametrize("api", list(STREAM_BUILDERS))
def test_blocking_in_the_held_back_tail_propagates_from_finish(api: GuardedApi) -> None:
    body = STREAM_BUILDERS[api](["fine so far, but secret"])
    cut = body.index(b"\n\n", body.index(b"secret")) + 2  # the stream ends right after the last delta
    editor = AnswerStreamEditor(api, blocking("secret"))
    assert b"secret" not in editor.feed(body[:cut])
    with pytest.raises(GuardrailBlockedError):
        editor.finish()


def test_chat_held_back_text_goes_out_in_a_clone_of_the_last_delta_before_finish_reason() -> None:
    out, _ = run("chat", redacting(), [chat_stream(["Hello ", "world"])])
    chunks = payloads(out)
    assert [c["choices"][0]["delta"] for c in chunks if c["choices"]] == [
        {"role": "assistant", "content": "", "refusal": None},
        {"content": "Hello world"},
        {},
    ]
    flushed = chunks[1]
    assert (flushed["id"], flushed["model"], flushed["obfuscation"]) == ("chatcmpl-1", "m", "xyz")
    assert flushed["choices"][0]["finish_reason"] is None
    assert chunks[2]["choices"][0]["finish_reason"] == "stop"
    assert out.endswith(b"data: [DONE]\n\n")


def test_chat_text_in_the_finishing_chunk_is_flushed_in_that_chunk() -> None:
    chunk = {"id": "c", "choices": [{"index": 0, "delta": {"content": "a secret"}, "finish_reason": "stop"}]}
    body = b"data: " + orjson.dumps(chunk) + b"\n\ndata: [DONE]\n\n"
    out, editor = run("chat", redacting(), [body])
    assert payloads(out) == [
        {"id": "c", "choices": [{"index": 0, "delta": {"content": "a [X]"}, "finish_reason": "stop"}]}
    ]
    assert editor.texts == ["a [X]"]


def test_chat_choices_are_separate_channels() -> None:
    def chunk(*choices: tuple[int, str | None, str | None]) -> bytes:
        listed = [
            {"index": i, "delta": {"content": t} if t is not None else {}, "finish_reason": f} for i, t, f in choices
        ]
        return b"data: " + orjson.dumps({"id": "c", "choices": listed}) + b"\n\n"

    body = b"".join(
        [
            chunk((0, "one sec", None), (1, "two sec", None)),
            chunk((0, "ret", None)),
            chunk((1, "ret", None)),
            chunk((0, None, "stop"), (1, None, "stop")),
            b"data: [DONE]\n\n",
        ]
    )
    out, editor = run("chat", redacting(), [body])
    assert delta_texts("chat", out) == {0: "one [X]", 1: "two [X]"}
    assert editor.texts == ["one [X]", "two [X]"]


def test_chat_emptied_delta_is_kept_when_it_carries_more_than_text() -> None:
    logprobs: dict[str, Any] = {
        "content": [{"token": "hi", "logprob": -0.1, "bytes": None, "top_logprobs": []}],
        "refusal": None,
    }
    chunks = [
        {"id": "c", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "hi"}, "finish_reason": None}]},
        {"id": "c", "choices": [{"index": 0, "delta": {"content": "hi"}, "logprobs": logprobs, "finish_reason": None}]},
        {"id": "c", "choices": [{"index": 0, "delta": {"content": "hi"}}, {"index": 1, "delta": "odd"}]},
        {"id": "c", "choices": [{"index": 0, "delta": {"content": "hi"}}], "usage": {"total_tokens": 1}},
    ]
    body = b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks)
    out, editor = run("chat", redacting(), [body])
    sent = payloads(out)
    deltas = [c["choices"][0]["delta"] for c in sent[:4]]
    assert deltas == [{"role": "assistant", "content": ""}, *[{"content": ""}] * 3]
    assert sent[2]["choices"][1] == {"index": 1, "delta": "odd"}
    flushed = sent[4]  # at the end of the stream, cloned from the last text delta, without its usage
    assert flushed["choices"] == [{"index": 0, "delta": {"content": "hihihihi"}, "finish_reason": None}]
    assert flushed["usage"] is None
    assert editor.texts == ["hihihihi"]


def test_chat_clone_drops_the_templates_logprobs() -> None:
    logprobs: dict[str, Any] = {"content": [], "refusal": None}
    chunk = {
        "id": "c",
        "choices": [{"index": 0, "delta": {"content": "abc"}, "logprobs": logprobs, "finish_reason": None}],
    }
    out, _ = run("chat", redacting(), [b"data: " + orjson.dumps(chunk) + b"\n\n"])
    sent = payloads(out)
    assert sent[-1]["choices"][0] == {"index": 0, "delta": {"content": "abc"}, "logprobs": None, "finish_reason": None}


def test_chat_text_after_the_choice_finished_gets_a_fresh_filter() -> None:
    def chunk(text: str | None, finish: str | None) -> bytes:
        delta = {"content": text} if text is not None else {}
        return b"data: " + orjson.dumps({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}) + b"\n\n"

    made: list[TextFilter] = []

    def make() -> TextFilter:
        made.append(redacting()())
        return made[-1]

    out, editor = run("chat", make, [chunk("sec", None), chunk(None, "stop"), chunk("ret", None), chunk(None, "stop")])
    assert len(made) == 2
    assert editor.texts == ["secret"]
    assert delta_texts("chat", out) == {0: "secret"}


def test_chat_events_that_cannot_carry_text_pass_unparsed() -> None:
    odd = [
        b": keep-alive comment\n\n",
        b'data: {"not json "content"\n\n',
        b': a comment naming "content"\n\n',
        b'data: ["content"]\n\n',
        b'data: {"choices": "content"}\n\n',
    ]
    body = b"".join(odd) + chat_stream(["x"])
    out, _ = run("chat", redacting(), [body])
    assert out.startswith(b"".join(odd))


def test_chat_stream_cut_without_done_is_flushed_by_finish() -> None:
    body = chat_stream(["the secret"])
    cut = body.index(b'{"content":"the secret"}')
    body = body[: body.index(b"\n\n", cut) + 2] + b"data: {}"  # a last event that never ended
    out, editor = run("chat", redacting(), [body])
    assert editor.texts == ["the [X]"]
    assert delta_texts("chat", out) == {0: "the [X]"}
    assert out.endswith(b'"obfuscation":"xyz"}\n\ndata: {}')  # the unterminated event stays last


def test_finish_passes_trailing_blank_bytes() -> None:
    body = chat_stream(["hi"])
    assert run("chat", Identity, [body + b"\n"])[0] == body + b"\n"


def test_messages_crlf_stream_keeps_its_event_lines_and_line_ends() -> None:
    body = messages_stream(SPLIT_SECRET, eol=b"\r\n")
    out, editor = run("messages", redacting(), [body])
    assert editor.texts == ["The password is [X]: do not share the [X]."]
    assert b"\n\n" not in out.replace(b"\r\n", b"")
    for event in split_sse_events(out):
        assert event.startswith(b"event: ") and event.endswith(b"\r\n\r\n")


def test_events_with_more_lines_keep_them_around_the_new_data() -> None:
    payload = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "a secret"}}
    data = orjson.dumps(payload)
    half = data.index(b',"delta"') + 1  # a line break between JSON tokens
    event = b"id: 7\nevent: content_block_delta\ndata:" + data[:half] + b"\ndata: " + data[half:] + b"\n: note\n\n"
    out, _ = run("messages", redacting(hold_back=0), [event])
    assert (
        out
        == b"id: 7\nevent: content_block_delta\ndata: "
        + orjson.dumps({**payload, "delta": {"type": "text_delta", "text": "a [X]"}})
        + b"\n: note\n\n"
    )


def test_messages_flush_before_the_event_that_ends_the_block() -> None:
    out, _ = run("messages", redacting(), [messages_stream(["Hi ", "there"])])
    kinds = [p["type"] for p in payloads(out)]
    assert kinds == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert payloads(out)[3]["delta"] == {"type": "text_delta", "text": "Hi there"}


@pytest.mark.parametrize("ending", ["message_delta", "message_stop", "error"])
def test_messages_end_of_message_flushes_every_block(ending: str) -> None:
    def delta(index: int, text: str) -> bytes:
        return sse("content_block_delta", {"index": index, "delta": {"type": "text_delta", "text": text}})

    body = delta(0, "first") + delta(1, "second") + sse(ending, {"delta": {}} if ending == "message_delta" else {})
    out, editor = run("messages", redacting(), [body])
    assert [p["type"] for p in payloads(out)] == ["content_block_delta", "content_block_delta", ending]
    assert editor.texts == ["first", "second"]


def test_messages_leaves_other_deltas_alone() -> None:
    json_delta = {"index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"q": "text_delta error"}'}}
    thinking = {"index": 0, "delta": {"type": "thinking_delta", "thinking": "secret text_delta"}}
    events = [
        sse("content_block_delta", {"index": 2, "delta": {"type": "text_delta", "text": "open"}}),
        sse("content_block_delta", thinking),
        sse("content_block_delta", json_delta),
        b"event: content_block_delta\ndata: text_delta, not json\n\n",
        b": text_delta in a comment\n\n",
        b": error in a comment\n\n",
        sse("content_block_stop", {"index": 5}),
    ]
    out, editor = run("messages", redacting(), [b"".join(events)])
    assert out.startswith(b"".join(events[1:]))
    assert editor.texts == ["open"]


def test_responses_sequence_numbers_stay_consecutive_when_deltas_are_dropped_or_added() -> None:
    body = responses_stream(SPLIT_SECRET)
    out, _ = run("responses", redacting(), [body])
    check_responses_stream(body, out)
    completed = payloads(out)[-1]
    assert completed["response"]["output"][0]["content"][0]["text"] == "The password is [X]: do not share the [X]."
    assert b"ecret" not in out


def test_responses_without_sequence_numbers_stay_without() -> None:
    body = responses_stream(SPLIT_SECRET, numbered=False)
    out, _ = run("responses", redacting(), [body])
    assert b"sequence_number" not in out
    check_responses_stream(body, out)


def test_responses_completed_flushes_parts_never_marked_done() -> None:
    body = b"".join(event for event in split_sse_events(responses_stream(["one se", "cret"])) if b".done" not in event)
    out, editor = run("responses", redacting(), [body])
    assert editor.texts == ["one [X]"]
    check_responses_stream(body, out)


def test_responses_error_event_flushes_held_back_text() -> None:
    events = split_sse_events(responses_stream(["half a sec", "ret"]))
    deltas = [e for e in events if b"output_text.delta" in e]
    error = sse("error", {"code": "server_error", "message": "boom", "sequence_number": 6})
    out, _ = run("responses", redacting(), [*events[:3], *deltas, error])
    sent = payloads(out)
    assert [p["type"] for p in sent][-2:] == ["response.output_text.delta", "error"]
    assert delta_texts("responses", out) == {("msg_1", 0): "half a [X]"}
    assert [p["sequence_number"] for p in sent] == list(range(len(sent)))


def test_responses_parts_found_by_output_index_when_deltas_have_no_item_id() -> None:
    body = responses_stream(["a secret"]).replace(b'"item_id":"msg_1",', b"")
    out, editor = run("responses", redacting(), [body])
    assert editor.texts == ["a [X]"]
    for payload in payloads(out):
        if payload["type"] == "response.output_item.done":
            assert payload["item"]["content"][0]["text"] == "a [X]"
        if payload["type"] == "response.completed":
            assert payload["response"]["output"][0]["content"][0]["text"] == "a [X]"


def test_responses_leaves_odd_and_unrelated_events_alone() -> None:
    events = [
        sse("response.output_text.delta", {"item_id": "m", "output_index": 0, "content_index": 0, "delta": "x"}),
        sse("response.output_text.delta", {"delta": None, "sequence_number": 1}),
        b"event: response.output_text.delta\ndata: not json\n\n",
        b"event: response.output_text.done\ndata: not json\n\n",
        b": response.completed in a comment\n\n",
        sse("response.content_part.done", {"item_id": "m", "content_index": 0, "part": {"type": "refusal"}}),
        sse("response.output_item.done", {"output_index": 0, "item": "odd"}),
        sse("response.completed", {"response": {"output": ["odd", {"type": "function_call"}]}}),
        sse("response.output_text.done", {"item_id": "other", "output_index": 3, "content_index": 0, "text": "t"}),
        sse("response.failed", {"response": None}),
        sse("response.in_progress", {"response": {"error": None}}),
        b'data: {"sequence_number" 3}\n\n',
    ]
    out, editor = run("responses", Identity, [b"".join(events)])
    assert out == b"".join(events)
    assert editor.texts == ["x"]


def test_responses_clone_drops_the_templates_logprobs() -> None:
    logprobs = [{"token": "ab", "logprob": -0.5, "bytes": [97, 98], "top_logprobs": []}]
    where = {"item_id": "m", "output_index": 0, "content_index": 0}
    body = sse("response.output_text.delta", {**where, "delta": "abc", "logprobs": logprobs, "sequence_number": 4})
    out, _ = run("responses", redacting(), [body])
    assert payloads(out) == [
        {"type": "response.output_text.delta", **where, "delta": "abc", "logprobs": [], "sequence_number": 4}
    ]


# -- complete answers ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("api", "rel"), BODIES, ids=_ids(BODIES))
def test_identity_filter_returns_the_same_body_object(api: GuardedApi, rel: str) -> None:
    body = load_fixture(rel).raw
    edited, texts = edit_answer_body(api, body, Identity)
    assert edited is body
    assert all(isinstance(text, str) for text in texts)


@pytest.mark.parametrize(("api", "rel"), BODIES, ids=_ids(BODIES))
def test_body_texts_are_filtered_and_nothing_else_changes(api: GuardedApi, rel: str) -> None:
    body = load_fixture(rel).raw
    edited, texts = edit_answer_body(api, body, upper_casing)
    _, originals = edit_answer_body(api, body, Identity)
    assert texts == [apply(upper_casing, text) for text in originals]
    if texts == originals:
        assert edited is body
        return
    assert orjson.loads(edited) != orjson.loads(body)
    assert orjson.loads(edit_answer_body(api, edited, Identity)[0]) == orjson.loads(edited)
    assert edit_answer_body(api, edited, Identity)[1] == texts


def test_body_channels_in_each_api() -> None:
    chat = {"choices": [{"message": {"content": "a secret"}}, {"message": {"content": None, "tool_calls": []}}, "x"]}
    part = {"type": "output_text", "text": "my secret", "annotations": []}
    responses = {
        "output": [{"type": "reasoning", "summary": []}, {"type": "message", "content": [part, {"type": "refusal"}]}]
    }
    messages = {"content": [{"type": "thinking", "thinking": "secret"}, {"type": "text", "text": "secret!"}]}
    for api, doc, want in [
        ("chat", chat, ["a [X]"]),
        ("responses", responses, ["my [X]"]),
        ("messages", messages, ["[X]!"]),
    ]:
        edited, texts = edit_answer_body(api, orjson.dumps(doc), redacting())  # type: ignore[arg-type]
        assert texts == want
        assert b"secret" not in edited.replace(b'"thinking":"secret"', b"")


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'"text"', b"{}", b'{"choices": "x"}'])
def test_bodies_of_unknown_shape_pass_as_they_are(body: bytes) -> None:
    for api in STREAM_BUILDERS:
        assert edit_answer_body(api, body, redacting()) == (body, [])


def test_blocking_filter_propagates_from_a_body() -> None:
    body = orjson.dumps({"content": [{"type": "text", "text": "the secret"}]})
    with pytest.raises(GuardrailBlockedError):
        edit_answer_body("messages", body, blocking("secret"))
