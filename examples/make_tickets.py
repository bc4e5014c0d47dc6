"""Regenerate the shipped support-ticket routing dataset (examples/data/tickets_*.jsonl).

    python examples/make_tickets.py

A small classification task in the chat format: a system prompt, four labels, some multi-turn
conversations (the assistant asks for an order number first) and some Chinese tickets. The train and
test files use disjoint (issue, phrasing) combinations, so test measures generalisation, not recall.
"""

import json
import random
from pathlib import Path

SYSTEM = "Route the support ticket to one team. Answer with one word: billing, shipping, technical or account."

ISSUES = {
    "billing": [
        "I was charged twice for my order", "my invoice shows the wrong amount", "I want a refund for my subscription",
        "the price on my bill went up without notice", "my card payment was declined but money left my bank",
        "please cancel the extra charge on my statement", "I need a copy of last month's invoice",
        "the discount code was not applied to my payment", "why was I billed after cancelling",
        "the tax on my receipt looks wrong", "我被重复扣款了", "请给我开发票",
    ],
    "shipping": [
        "my parcel has not arrived yet", "the tracking number does not work", "the package was delivered to the wrong address",
        "the courier lost my box", "delivery is two weeks late", "can I change the delivery date",
        "the parcel arrived damaged", "which carrier ships my order", "my order is stuck in customs",
        "the driver left the package outside in the rain", "我的快递还没到", "物流信息一直没有更新",
    ],
    "technical": [
        "the app crashes when I open it", "the website shows an error 500", "I cannot upload a photo in the app",
        "the page freezes after the latest update", "notifications stopped working on my phone",
        "the checkout button does nothing", "the app drains my battery", "search returns a blank screen",
        "video playback stutters on my laptop", "the sync between devices fails", "应用一打开就闪退", "网页一直加载不出来",
    ],
    "account": [
        "I forgot my password", "I cannot log in to my account", "please delete my account",
        "how do I change my email address", "my account was locked after three tries", "I want to merge two accounts",
        "two-factor codes never reach my phone", "someone else is using my profile", "how do I update my username",
        "I never received the verification email", "我想注销账号", "登录时提示密码错误",
    ],
}

PHRASINGS = [
    "{issue}.", "Hello, {issue}.", "Hi team, {issue}. Can you help?", "Complaint: {issue}.", "Urgent: {issue}.",
    "Good morning. {issue}. Thanks.", "Ticket: {issue}", "{issue}, what should I do?", "Please help, {issue}.",
    "Hey, {issue} and I am not happy.", "Dear support, {issue}.", "Quick question: {issue}?",
    "Since yesterday {issue}.", "My friend says {issue} too, and so do I.", "{issue}. This is the second time.",
    "Hello there! {issue}. Regards, Sam", "Not sure who to ask, but {issue}.", "FYI {issue}.",
    "Can someone look into this: {issue}", "{issue}. Please fix it soon.",
]


def _conversation(label: str, issue: str, phrasing: str, rng: random.Random) -> dict:
    messages = [{"role": "system", "content": SYSTEM}] if rng.random() < 0.85 else []
    messages.append({"role": "user", "content": phrasing.format(issue=issue)})
    if rng.random() < 0.2:
        # Multi-turn: the assistant asks for an order number before routing.
        messages += [
            {"role": "assistant", "content": "Could you share your order number?"},
            {"role": "user", "content": f"It is {rng.randint(1000, 9999)}."},
        ]
    messages.append({"role": "assistant", "content": label})
    return {"messages": messages, "metadata": {"label": label}}


def make(seed: int = 7) -> tuple[list[dict], list[dict]]:
    """Return (train, test) records; test combinations never appear in train."""
    rng = random.Random(seed)
    combos = [(label, issue, p) for label, issues in ISSUES.items() for issue in issues for p in PHRASINGS]
    rng.shuffle(combos)
    test_combos, train_combos = combos[:200], combos[200:]
    train = [_conversation(*c, rng) for c in train_combos]
    test = [_conversation(*c, rng) for c in test_combos]
    return train, test


def write(stem: str, train: list[dict], test: list[dict]) -> None:
    """Write examples/data/{stem}_train.jsonl and {stem}_test.jsonl."""
    out = Path(__file__).parent / "data"
    out.mkdir(exist_ok=True)
    for name, rows in ((f"{stem}_train.jsonl", train), (f"{stem}_test.jsonl", test)):
        with open(out / name, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(train)} train and {len(test)} test conversations to {out}")


if __name__ == "__main__":
    write("tickets", *make())
