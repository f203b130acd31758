"""pii-redactor: personal data replaced by typed placeholders (or refused, or logged) before the provider sees it,
and put back in the answer; decisions and errors name kinds and counts, never the values."""

from __future__ import annotations

import asyncio
import copy
import re
import threading
from typing import Any

import pytest

from gomodel_proxy.core.errors import GuardrailBlockedError
from gomodel_proxy.core.types import Principal
from gomodel_proxy.guardrails import interface
from gomodel_proxy.guardrails.interface import Decision, GuardedApi, GuardedRequest
from gomodel_proxy.guardrails.pii import ALL_KINDS, Redactor, StreamRestorer
from gomodel_proxy.guardrails.pii_redactor import PIIRedactor
from gomodel_proxy.guardrails.regex_filter import RegexFilter

EMAIL = "jane.doe@example.com"
EMAIL2 = "j.smith@corp.example.org"
PHONE_UK = "+44 20 7946 0958"
PHONE_DE = "+49 30 901820"
SSN = "123-45-6789"
CARD = "4111 1111 1111 1111"
IBAN = "GB82 WEST 1234 5698 7654 32"
IPV4 = "192.168.1.20"
IPV6 = "2001:db8::8a2e:370:7334"
VALUES = (EMAIL, EMAIL2, PHONE_UK, PHONE_DE, SSN, CARD, IBAN, IPV4, IPV6)


def redactor(action: str = "redact", *, restore: bool = False, scan_output: bool = False,
             detect: tuple[str, ...] = ALL_KINDS, hold_back: int = 64, name: str = "pii-redactor") -> PIIRedactor:
    return PIIRedactor(name, 10, {"detect": detect, "action": action, "restore": restore, "scan_output": scan_output},
                       hold_back=hold_back)


def request(api: GuardedApi, body: dict[str, Any]) -> GuardedRequest:
    return GuardedRequest(api=api, body=body, principal=Principal(kind="key", key_id="k1"))


def assert_no_values(decisions: list[Decision], *values: str) -> None:
    for d in decisions:
        for field in (d.guardrail, d.stage, d.action, d.detail):
            for v in values or VALUES:
                assert v not in field


def chat_body() -> dict[str, Any]:
    return {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": f"The account owner is {EMAIL}."},
            {"role": "user", "content": [
                {"type": "text", "text": f"Call me on {PHONE_UK} or my Berlin office {PHONE_DE}."},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                {"type": "text", "text": f"My SSN is {SSN} and my card {CARD}."},
            ]},
            {"role": "assistant", "content": "Noted."},
            {"role": "user", "content": f"Pay from {IBAN}; the server is {IPV4} / {IPV6}. Mail {EMAIL} or {EMAIL2}."},
        ],
    }


async def test_chat_every_kind_is_replaced_by_a_typed_placeholder() -> None:
    req = request("chat", chat_body())
    g = redactor()
    await g.process_input(req)
    msgs = req.body["messages"]
    assert msgs[0]["content"] == "The account owner is [EMAIL_1]."
    assert msgs[1]["content"][0]["text"] == "Call me on [PHONE_1] or my Berlin office [PHONE_2]."
    assert msgs[1]["content"][1] == {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    assert msgs[1]["content"][2]["text"] == "My SSN is [SSN_1] and my card [CREDIT_CARD_1]."
    assert msgs[2]["content"] == "Noted."
    # The same address gets the same placeholder within the request; another one the next number.
    assert msgs[3]["content"] == "Pay from [IBAN_1]; the server is [IP_1] / [IP_2]. Mail [EMAIL_1] or [EMAIL_2]."
    assert req.decisions == [Decision("pii-redactor", "input", "redact",
                                      "credit_card=1,email=3,iban=1,ip=2,phone=2,ssn=1")]
    assert_no_values(req.decisions)
    state = req.state["pii-redactor"]
    assert isinstance(state, Redactor)
    assert state.mapping == {"[EMAIL_1]": EMAIL, "[EMAIL_2]": EMAIL2, "[PHONE_1]": PHONE_UK, "[PHONE_2]": PHONE_DE,
                             "[SSN_1]": SSN, "[CREDIT_CARD_1]": CARD, "[IBAN_1]": IBAN, "[IP_1]": IPV4,
                             "[IP_2]": IPV6}
    assert not any(v in repr(req.body) for v in VALUES)


async def test_responses_instructions_input_parts_and_tool_output_are_redacted() -> None:
    body: dict[str, Any] = {
        "model": "gpt-4o",
        "instructions": f"Escalations go to {EMAIL}.",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": f"I am {EMAIL}, card {CARD}"}]},
            {"type": "function_call", "call_id": "c1", "name": "lookup", "arguments": f'{{"ssn": "{SSN}"}}'},
            {"type": "function_call_output", "call_id": "c1", "output": f"IBAN {IBAN}"},
        ],
    }
    req = request("responses", body)
    await redactor().process_input(req)
    assert body["instructions"] == "Escalations go to [EMAIL_1]."
    assert body["input"][0]["content"][0]["text"] == "I am [EMAIL_1], card [CREDIT_CARD_1]"
    assert body["input"][1]["arguments"] == f'{{"ssn": "{SSN}"}}'  # the model's own tool call: not input text
    assert body["input"][2]["output"] == "IBAN [IBAN_1]"
    assert req.decisions == [Decision("pii-redactor", "input", "redact", "credit_card=1,email=2,iban=1")]


async def test_responses_plain_string_input_is_redacted() -> None:
    body: dict[str, Any] = {"model": "gpt-4o", "input": f"reach me at {PHONE_UK}"}
    req = request("responses", body)
    await redactor().process_input(req)
    assert body["input"] == "reach me at [PHONE_1]"


async def test_messages_system_blocks_and_tool_results_are_redacted() -> None:
    body: dict[str, Any] = {
        "model": "claude-sonnet-4",
        "system": [{"type": "text", "text": f"Customer: {EMAIL}"}],
        "messages": [
            {"role": "user", "content": f"My SSN: {SSN}"},
            {"role": "assistant", "content": [{"type": "text", "text": "Let me check."},
                                              {"type": "tool_use", "id": "t1", "name": "crm", "input": {"q": EMAIL}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                          "content": [{"type": "text", "text": f"phone {PHONE_DE}, ip {IPV4}"}]}]},
        ],
    }
    req = request("messages", body)
    await redactor().process_input(req)
    assert body["system"][0]["text"] == "Customer: [EMAIL_1]"
    assert body["messages"][0]["content"] == "My SSN: [SSN_1]"
    assert body["messages"][1]["content"][1]["input"] == {"q": EMAIL}
    assert body["messages"][2]["content"][0]["content"][0]["text"] == "phone [PHONE_1], ip [IP_1]"
    assert req.decisions == [Decision("pii-redactor", "input", "redact", "email=1,ip=1,phone=1,ssn=1")]


async def test_only_the_configured_kinds_are_detected() -> None:
    req = request("chat", {"messages": [{"role": "user", "content": f"{EMAIL} {PHONE_UK} {CARD}"}]})
    await redactor(detect=("email",)).process_input(req)
    assert req.body["messages"][0]["content"] == f"[EMAIL_1] {PHONE_UK} {CARD}"


@pytest.mark.parametrize("text", [
    "Product code 4111 1111 1111 1112 is back in stock.",  # card-shaped but fails Luhn
    "The meeting moved from 2024-03-15 to 15/03/2024 at 10:30.",
    "Order number 2024-0001-3344 ships on 03.04.2025.",
    "Your order #12345678 is confirmed; invoice INV-998877.",
    "Upgrade to version 1.2.3 or 10.0.19045.3693 of the tool.",
    "SSN-shaped test data 000-12-3456 and 666-12-3456 is never issued.",
    "Call extension 1234 or room 42.",
])
async def test_look_alikes_are_left_alone(text: str) -> None:
    for action in ("redact", "block", "log"):
        req = request("chat", {"messages": [{"role": "user", "content": text}]})
        await redactor(action).process_input(req)
        assert req.body["messages"][0]["content"] == text
        assert req.decisions == []
        assert req.state == {}


async def test_a_four_part_version_number_is_an_ipv4_address_to_the_detector() -> None:
    # Documented behaviour of the detector: "1.2.3.4" is a valid IPv4 address and cannot be told from a version.
    req = request("chat", {"messages": [{"role": "user", "content": "upgrade to version 1.2.3.4 now"}]})
    await redactor().process_input(req)
    assert req.body["messages"][0]["content"] == "upgrade to version [IP_1] now"


async def test_no_personal_data_no_decision_and_no_state() -> None:
    body = {"messages": [{"role": "user", "content": "What is the capital of France?"}]}
    req = request("chat", body)
    g = redactor(restore=True)
    await g.process_input(req)
    assert req.decisions == [] and req.state == {}
    assert g.process_output(req) is None


async def test_block_refuses_naming_the_guardrail_and_kinds_never_the_values() -> None:
    body = chat_body()
    before = copy.deepcopy(body)
    req = request("chat", body)
    with pytest.raises(GuardrailBlockedError) as info:
        await redactor("block", name="pii-strict").process_input(req)
    message = str(info.value)
    assert message == ("The request was blocked by guardrail 'pii-strict': the prompt contains personal data "
                       "(credit_card, email, iban, ip, phone, ssn).")
    assert info.value.guardrail == "pii-strict" and info.value.stage == "input"
    assert not any(v in message for v in VALUES)
    assert body == before
    assert req.decisions == [Decision("pii-strict", "input", "block",
                                      "credit_card=1,email=3,iban=1,ip=2,phone=2,ssn=1")]
    assert_no_values(req.decisions)


async def test_log_records_kinds_and_leaves_the_body_alone() -> None:
    body = chat_body()
    before = copy.deepcopy(body)
    req = request("chat", body)
    g = redactor("log")
    await g.process_input(req)
    assert body == before
    assert req.decisions == [Decision("pii-redactor", "input", "log",
                                      "credit_card=1,email=3,iban=1,ip=2,phone=2,ssn=1")]
    assert_no_values(req.decisions)
    assert req.state == {}
    assert g.process_output(req) is None


# -- the answer ---------------------------------------------------------------------------------------------------
async def redacted_request(g: PIIRedactor) -> GuardedRequest:
    req = request("chat", {"messages": [{"role": "user", "content": f"I am {EMAIL}, card {CARD}, phone {PHONE_UK}"}]})
    await g.process_input(req)
    assert req.body["messages"][0]["content"] == "I am [EMAIL_1], card [CREDIT_CARD_1], phone [PHONE_1]"
    return req


async def test_restore_puts_the_values_back_even_when_placeholders_are_split() -> None:
    g = redactor(restore=True)
    req = await redacted_request(g)
    f = g.process_output(req)
    assert isinstance(f, StreamRestorer)
    pieces = ["Dear [EMA", "IL_1], we charged [CREDIT_", "CARD_1] and will call [PHONE_1", "]. Also [EMAIL_9]."]
    out = "".join(f.feed(p) for p in pieces) + f.finish()
    assert out == f"Dear {EMAIL}, we charged {CARD} and will call {PHONE_UK}. Also [EMAIL_9]."
    assert req.decisions[-1] == Decision("pii-redactor", "output", "restore", "placeholders=3")
    assert_no_values(req.decisions)


async def test_restore_is_recorded_once_per_request_for_several_channels() -> None:
    g = redactor(restore=True)
    req = await redacted_request(g)
    first, second = g.process_output(req), g.process_output(req)
    assert first is not None and second is not None and first is not second
    assert [d.action for d in req.decisions] == ["redact", "restore"]
    assert second.feed("[EMAIL_1]") + second.finish() == EMAIL


async def test_without_restore_the_answer_is_not_touched() -> None:
    g = redactor()
    req = await redacted_request(g)
    assert g.process_output(req) is None


@pytest.mark.parametrize("hold_back", [0, 64])
async def test_scan_output_redacts_new_personal_data_in_the_answer(hold_back: int) -> None:
    g = redactor(scan_output=True, hold_back=hold_back)
    req = request("chat", {"messages": [{"role": "user", "content": "Who do I contact?"}]})
    await g.process_input(req)
    f = g.process_output(req)
    assert f is not None
    answer = f"Write to {EMAIL2} or call {PHONE_DE}; again: {EMAIL2}."
    assert f.feed(answer) + f.finish() == "Write to [EMAIL_1] or call [PHONE_1]; again: [EMAIL_1]."
    assert req.decisions == [Decision("pii-redactor", "output", "redact", "email"),
                             Decision("pii-redactor", "output", "redact", "phone"),
                             Decision("pii-redactor", "output", "redact", "email")]


async def test_scan_output_catches_a_value_split_across_stream_chunks() -> None:
    g = redactor(scan_output=True, hold_back=32)
    req = request("chat", {"messages": []})
    f = g.process_output(req)
    assert f is not None
    pieces = ["Sure! The card on file is 4111 11", "11 1111 1111, expiring soon. ", "Anything else?"]
    returned = [f.feed(p) for p in pieces] + [f.finish()]
    assert "".join(returned) == "Sure! The card on file is [CREDIT_CARD_1], expiring soon. Anything else?"
    assert not any("4111" in r for r in returned)


async def test_scan_output_block_ends_the_answer_without_the_value() -> None:
    g = redactor("block", scan_output=True, name="pii-out")
    req = request("chat", {"messages": [{"role": "user", "content": "hello"}]})
    await g.process_input(req)
    f = g.process_output(req)
    assert f is not None
    assert f.feed("Here you go: ") == ""
    with pytest.raises(GuardrailBlockedError) as info:
        f.feed(f"{SSN} is the number you asked for.") + f.finish()
    assert str(info.value) == ("The answer was blocked by guardrail 'pii-out': the answer contains personal data "
                               "(ssn).")
    assert info.value.stage == "output"
    assert req.decisions == [Decision("pii-out", "output", "block", "ssn")]


async def test_scan_output_log_records_and_passes_the_answer() -> None:
    g = redactor("log", scan_output=True)
    req = request("chat", {"messages": []})
    f = g.process_output(req)
    assert f is not None
    answer = f"The server at {IPV4} answered; the admin is {EMAIL}."
    assert f.feed(answer) + f.finish() == answer
    assert req.decisions == [Decision("pii-redactor", "output", "log", "ip"),
                             Decision("pii-redactor", "output", "log", "email")]
    assert_no_values(req.decisions)


async def test_scan_output_with_restore_keeps_new_values_apart_from_the_user_s() -> None:
    g = redactor(restore=True, scan_output=True)
    req = request("chat", {"messages": [{"role": "user", "content": f"I am {EMAIL}"}]})
    await g.process_input(req)
    assert req.body["messages"][0]["content"] == "I am [EMAIL_1]"
    f = g.process_output(req)
    assert f is not None
    out = f.feed(f"Hello [EMAIL_1], please write to {EMAIL2} for help.") + f.finish()
    assert out.startswith(f"Hello {EMAIL}, please write to ")
    assert EMAIL2 not in out
    assert out.count(EMAIL) == 1  # the address the model produced must not become the user's own


async def test_scan_output_numbers_placeholders_the_same_streamed_or_whole() -> None:
    g = redactor(scan_output=True)
    answer = ("Thanks for asking. Here is the contact you wanted for the project: write to "
              "bob@example.org please, thanks.")
    whole = g.process_output(request("chat", {}))
    stream = g.process_output(request("chat", {}))
    assert whole is not None and stream is not None
    assert "[EMAIL_1]" in whole.feed(answer) + whole.finish()
    assert "".join(stream.feed(ch) for ch in answer) + stream.finish() == whole_text(answer)


def whole_text(answer: str) -> str:
    return answer.replace("bob@example.org", "[EMAIL_1]")


async def test_a_large_prompt_is_scanned_in_a_worker_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[str] = []
    real = PIIRedactor._scan_input

    def spy(self: PIIRedactor, req: GuardedRequest, slots: Any) -> None:
        threads.append(threading.current_thread().name)
        real(self, req, slots)

    monkeypatch.setattr(PIIRedactor, "_scan_input", spy)
    big = "lorem ipsum dolor sit amet " * (interface.INLINE_CHARS // 20) + f" write to {EMAIL}"
    body = {"model": "m", "messages": [{"role": "user", "content": big}]}
    req = request("chat", body)
    await redactor().process_input(req)
    assert EMAIL not in body["messages"][0]["content"] and "[EMAIL_1]" in body["messages"][0]["content"]
    small = request("chat", {"model": "m", "messages": [{"role": "user", "content": f"hi {EMAIL}"}]})
    await redactor().process_input(small)
    assert threads[0] != threading.main_thread().name and threads[1] == threading.main_thread().name
    # The regex guardrail does the same, and still refuses from the thread.
    guard = RegexFilter("secrets", 1, {"patterns": [{"name": "k", "pattern": re.compile("AKIA[0-9A-Z]{16}"),
                                                      "action": "block"}]}, hold_back=16)
    with pytest.raises(GuardrailBlockedError):
        await guard.process_input(request("chat", {"model": "m", "messages": [
            {"role": "user", "content": big + " AKIAIOSFODNN7EXAMPLE"}]}))
    assert asyncio.get_running_loop().is_running()
