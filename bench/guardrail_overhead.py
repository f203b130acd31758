"""What the PII guardrail costs per request in the gateway process, without sockets: CPU µs per request.

The guardrail is built as the gateway builds it (``guardrails.yaml`` read by ``load_guardrails_file``, then
``build_guardrail`` with the default ``hold_back_chars`` into a ``GuardrailSet``), with the config of
bench/perf.py's ``gateway-prod`` system (``PII_RAILS``). Three requests:

- ``plain``: bench/run.py's ``BODY_PLAIN`` (a system and a user message, no personal data);
- ``digits``: the same with a few numbers in the user message, none of them personal data;
- ``pii``: the same with an email, a phone number, a card number and an IP address in the user message.

Two measures each, ``time.process_time`` over N runs, the median of several rounds:

- ``input``: ``guardrail.process_input`` on a fresh ``GuardedRequest`` (the request-side check alone);
- ``step``: the chain's Guardrails step around a handler answering a chat completion (the answer echoes the
  placeholders, so ``restore`` works on it), less the same handler called directly.

Bodies are parsed before the clock starts (the redactor rewrites them in place). The coroutines never
suspend (the prompts are below ``INLINE_CHARS``), so they are driven without an event loop.

Usage (from the repository root)::

    .venv/bin/python bench/guardrail_overhead.py [-n 20000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

from perf import PII_RAILS  # noqa: E402
from run import BODY_PLAIN  # noqa: E402

from gomodel_proxy.audit.trail import NoopAuditTrail  # noqa: E402
from gomodel_proxy.core.interfaces import RequestContext  # noqa: E402
from gomodel_proxy.core.types import CallRecord, Principal  # noqa: E402
from gomodel_proxy.guardrails.config_file import load_guardrails_file  # noqa: E402
from gomodel_proxy.guardrails.guardrail_set import GuardrailSet, build_guardrail  # noqa: E402
from gomodel_proxy.guardrails.interface import GuardedRequest, Guardrail  # noqa: E402
from gomodel_proxy.middleware.guardrails import Guardrails  # noqa: E402
from gomodel_proxy.observability.metrics import Metrics  # noqa: E402

HOLD_BACK = 64  # config.guardrails.hold_back_chars' default
PRINCIPAL = Principal(kind="key", key_id="k1")
_PLAIN = orjson.loads(BODY_PLAIN)
_DIGITS = {**_PLAIN, "messages": [
    _PLAIN["messages"][0],
    {"role": "user", "content": "Give me 3 tips for the 2024 season in under 50 words, as a list of 1.5 lines."},
]}
_PII = {**_PLAIN, "messages": [
    _PLAIN["messages"][0],
    {"role": "user", "content": "Please email jane.doe@example.com or call +1 415-555-0132; my card is "
                                "4111 1111 1111 1111 and the server is 10.0.12.7. Say hello in one sentence."},
]}
BODIES = {"plain": orjson.dumps(_PLAIN), "digits": orjson.dumps(_DIGITS), "pii": orjson.dumps(_PII)}
ANSWER = orjson.dumps({
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello! I will write to [EMAIL_1]."},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 30, "completion_tokens": 9, "total_tokens": 39},
})


class _Logger:
    def info(self, *args: Any, **kwargs: Any) -> None:
        pass


def build() -> tuple[GuardrailSet, Guardrail]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "guardrails.yaml"
        path.write_text(PII_RAILS, encoding="utf-8")
        specs, problems = load_guardrails_file(path, required=True)
    if problems:
        raise SystemExit("\n".join(problems))
    entries = [(s, build_guardrail(s, providers={}, hold_back=HOLD_BACK, logger=_Logger())) for s in specs]
    return GuardrailSet(entries), entries[0][1]


def drive(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never suspends."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    raise RuntimeError("the coroutine suspended")


async def answer(ctx: RequestContext) -> web.Response:
    return web.Response(body=ANSWER, content_type="application/json")


def timed(n: int, raw: bytes, run: Callable[[dict[str, Any]], Any]) -> float:
    """CPU µs per call of ``run`` over ``n`` freshly parsed bodies."""
    bodies = [orjson.loads(raw) for _ in range(n)]
    start = time.process_time()
    for body in bodies:
        run(body)
    return (time.process_time() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=20_000, help="requests per round (default 20000)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds; the median is reported (default 7)")
    args = parser.parse_args()
    rails, guardrail = build()
    step = Guardrails(rails, metrics=Metrics(), audit=NoopAuditTrail(), logger=_Logger())

    def check(body: dict[str, Any]) -> None:
        drive(guardrail.process_input(GuardedRequest("chat", body, PRINCIPAL)))

    def context(body: dict[str, Any]) -> RequestContext:
        call = CallRecord(request_id="r", endpoint="chat.completions", principal=PRINCIPAL, model_requested="m")
        return RequestContext(call, body, 0)

    def through_step(body: dict[str, Any]) -> None:
        drive(step.process(context(body), answer))

    def bare(body: dict[str, Any]) -> None:
        drive(answer(context(body)))

    # The answer must come back restored through the PII request (a check that the step did its work).
    ctx = context(orjson.loads(BODIES["pii"]))
    restored = drive(step.process(ctx, answer))
    assert b"jane.doe@example.com" in restored.body, restored.body
    assert "jane.doe" not in orjson.dumps(ctx.body).decode()

    print(f"PII guardrail overhead, CPU µs per request (median of {args.rounds} rounds x {args.n})")
    print(f"{'request':<8} {'input':>8} {'step':>8}")
    for name, raw in BODIES.items():
        inputs, steps = [], []
        for _ in range(args.rounds):
            inputs.append(timed(args.n, raw, check))
            steps.append(timed(args.n, raw, through_step) - timed(args.n, raw, bare))
        print(f"{name:<8} {statistics.median(inputs):8.2f} {statistics.median(steps):8.2f}")


if __name__ == "__main__":
    main()
