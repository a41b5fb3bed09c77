"""The payment decision rule, on its own: no database, no broker."""

from __future__ import annotations

import uuid

import msgspec
import pytest

from hsepay.payments.model import PaymentDecision, PaymentRequest, decide

ALICE, BOB = uuid.uuid4(), uuid.uuid4()


def request(user_id: uuid.UUID, amount: int, order_id: uuid.UUID | None = None) -> PaymentRequest:
    return PaymentRequest(order_id=order_id or uuid.uuid4(), user_id=user_id, amount=amount)


def outcome(decisions: list[PaymentDecision]) -> list[tuple[str, str | None]]:
    return [(d.status, d.reason) for d in decisions]


def test_success_debits_the_running_balance_in_arrival_order():
    batch = [request(ALICE, 60), request(ALICE, 30), request(ALICE, 20), request(ALICE, 10)]
    answers, new = decide(batch, {ALICE: 100}, {})
    # 100 - 60 - 30 = 10: the third (20) no longer fits, the fourth (10) still does.
    assert outcome(answers) == [
        ("succeeded", None),
        ("succeeded", None),
        ("failed", "insufficient_funds"),
        ("succeeded", None),
    ]
    assert new == answers
    assert [a.order_id for a in answers] == [r.order_id for r in batch]
    assert all(a.succeeded == (a.status == "succeeded") for a in answers)


def test_exact_balance_succeeds_one_more_fails():
    answers, _ = decide([request(ALICE, 100), request(ALICE, 1)], {ALICE: 100}, {})
    assert outcome(answers) == [("succeeded", None), ("failed", "insufficient_funds")]


def test_insufficient_funds_leaves_the_balance_for_later_orders():
    answers, _ = decide([request(ALICE, 101), request(ALICE, 100)], {ALICE: 100}, {})
    assert outcome(answers) == [("failed", "insufficient_funds"), ("succeeded", None)]


def test_zero_balance_account_fails_with_insufficient_funds():
    answers, _ = decide([request(ALICE, 1)], {ALICE: 0}, {})
    assert outcome(answers) == [("failed", "insufficient_funds")]


def test_unknown_account_fails_with_account_not_found():
    answers, new = decide([request(BOB, 5)], {ALICE: 100}, {})
    assert outcome(answers) == [("failed", "account_not_found")]
    assert new == answers


def test_balances_are_per_user():
    batch = [request(ALICE, 80), request(BOB, 80), request(ALICE, 30), request(BOB, 30)]
    answers, _ = decide(batch, {ALICE: 100, BOB: 200}, {})
    assert outcome(answers) == [
        ("succeeded", None),
        ("succeeded", None),
        ("failed", "insufficient_funds"),
        ("succeeded", None),
    ]


def test_decision_carries_the_request():
    req = request(ALICE, 42)
    [answer], _ = decide([req], {ALICE: 42}, {})
    assert (answer.order_id, answer.user_id, answer.amount) == (req.order_id, ALICE, 42)


@pytest.mark.parametrize(
    "earlier_status, earlier_reason",
    [("failed", "insufficient_funds"), ("failed", "account_not_found"), ("succeeded", None)],
)
def test_an_order_decided_before_gets_the_same_answer_and_nothing_new(earlier_status, earlier_reason):
    order_id = uuid.uuid4()
    earlier = PaymentDecision(order_id=order_id, user_id=ALICE, amount=50, status=earlier_status, reason=earlier_reason)
    # Today's balance would give the opposite answer; the recorded decision stands.
    balance_now = 10**6 if earlier_status == "failed" else 0
    answers, new = decide([request(ALICE, 50, order_id)], {ALICE: balance_now}, {order_id: earlier})
    assert answers == [earlier]
    assert new == []


def test_an_earlier_decision_does_not_spend_the_balance_again():
    done = uuid.uuid4()
    earlier = PaymentDecision(order_id=done, user_id=ALICE, amount=70, status="succeeded")
    answers, new = decide([request(ALICE, 70, done), request(ALICE, 100)], {ALICE: 100}, {done: earlier})
    assert outcome(answers) == [("succeeded", None), ("succeeded", None)]
    assert [d.amount for d in new] == [100]


def test_duplicate_order_in_one_batch_is_answered_once():
    order_id = uuid.uuid4()
    batch = [request(ALICE, 60, order_id), request(ALICE, 60, order_id), request(ALICE, 60)]
    answers, new = decide(batch, {ALICE: 100}, {})
    # The repeat gets the first answer and does not debit again, so the third order fails.
    assert outcome(answers) == [("succeeded", None), ("succeeded", None), ("failed", "insufficient_funds")]
    assert answers[0] == answers[1]
    assert len(new) == 2
    assert [d.order_id for d in new] == [order_id, batch[2].order_id]


def test_empty_batch():
    assert decide([], {ALICE: 1}, {}) == ([], [])


def test_inputs_are_not_mutated():
    balances = {ALICE: 100}
    earlier: dict = {}
    decide([request(ALICE, 60)], balances, earlier)
    assert balances == {ALICE: 100}
    assert earlier == {}


@pytest.mark.parametrize("amount", [0, -1, 10**12 + 1])
def test_payment_request_amount_is_bounded(amount):
    raw = msgspec.json.encode({"order_id": str(uuid.uuid4()), "user_id": str(ALICE), "amount": amount})
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(raw, type=PaymentRequest)
