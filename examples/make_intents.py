"""Regenerate the shipped Chinese customer-service intent dataset (examples/data/intents_*.jsonl).

    python examples/make_intents.py

A 5-label classification task in the chat format, in Chinese: a hotel-booking platform's conversations, each
labelled with what the customer wants (催退款 / 到店无房 / 问使用规则 / 投诉服务 / 修改订单). The user turn is a
dialogue excerpt (客户 / 客服 lines; the intent comes after neutral openings). A quarter of the conversations are
multi-turn: the excerpt ends vaguely, the assistant asks what the problem is, and the intent is in the next user
turn (the clarifying question follows from the excerpt, so serving can tell when to ask). Many issues share words
with another label on purpose (a refund *rule* question, a complaint *about* a refund, a refund after *no room*).
The train and test files use disjoint (issue, phrasing) combinations, so test measures generalisation, not recall.
"""

import random

from make_tickets import write  # the same file layout; run as a script, examples/ is on sys.path

LABELS = ["催退款", "到店无房", "问使用规则", "投诉服务", "修改订单"]
SYSTEM = "以下是酒店预订平台的客服对话片段。判断客户的意图，只回答一个标签：" + "、".join(LABELS) + "。"

ISSUES = {
    "催退款": [
        "订单取消三天了退款还没到账", "说好的退款到底什么时候到", "退款一直显示处理中", "取消了酒店订单钱还没退回来",
        "申请退款一个星期了没人处理", "你们承诺二十四小时内退款，现在都三天了", "押金怎么还没退到我卡上",
        "到店没房我取消了，可是房费到现在还没退", "退款进度能不能帮我催一下", "银行说没收到你们的退款",
        "差价说要退给我，一直没看到", "重复扣的那笔钱请尽快退回",
    ],
    "到店无房": [
        "我到前台了，他们说没有房间", "酒店说查不到我的预订", "前台说满房了让我去别家住", "到店以后说我订的房型没有了",
        "凌晨到酒店被告知没房", "酒店说超售了，今晚住不了", "拖着行李站在大堂，酒店说房间已经卖完了",
        "到了民宿，房东说房子今天不能住", "前台说系统里没有我的订单，也没有空房", "订单显示已确认，到店却说没房",
        "酒店让我等退房的客人走了才有房，已经等到半夜了", "到店说我订的那家店今天暂停营业",
    ],
    "问使用规则": [
        "这个优惠券周末能用吗", "几点之前取消可以免费", "会员积分怎么抵扣房费", "可以带宠物入住吗",
        "早餐券能给同住的人用吗", "退款规则是怎样的，多久能到账", "改期要收手续费吗", "儿童入住需要额外收费吗",
        "延迟退房最晚可以到几点", "优惠券能和会员价叠加吗", "预订的时候能开发票吗", "押金一般要交多少",
    ],
    "投诉服务": [
        "前台的态度非常差", "房间卫生太差，床单上有头发", "客服电话打了十次都没人接", "保洁没打扫就走了",
        "服务员对我们很不耐烦", "空调坏了，报修两个小时没人来", "你们客服一直推脱，问题就是不解决",
        "为了退款的事，客服的态度太恶劣了", "早餐厅的服务员把我们赶了出去", "办入住让我在前台等了一个小时",
        "换房的时候前台冲我发脾气", "房间里有烟味，说了也没人处理",
    ],
    "修改订单": [
        "我想把入住日期改到下周五", "能帮我把大床房换成双床房吗", "入住人的名字写错了，要改一下", "我想在原订单上多住一晚",
        "订单上的手机号要改一下", "退房日期想提前一天", "想给订单加一份早餐", "两间房想改成一间",
        "能把订单改到同品牌的另一家店吗", "入住人数要从两人改成三人", "到店时间要改到晚上十点以后", "想把房型升级成套房",
    ],
}

PHRASINGS = [
    "{issue}。", "你好，{issue}。", "在吗？{issue}。", "{issue}，麻烦尽快处理。", "客服你好，{issue}，怎么办？",
    "{issue}！", "请问一下，{issue}。", "我订单号{order}，{issue}。", "{issue}，这已经是第二次了。", "哎，{issue}。",
    "{issue}，急！", "您好，打扰一下，{issue}。", "朋友帮我订的，{issue}。", "{issue}，请给个说法。",
    "刚才电话里没说清楚，{issue}。", "我是你们的老会员，{issue}。", "{issue}，谢谢。", "出差住的，{issue}。",
    "{issue}，你们看怎么弄。", "麻烦帮我看看，{issue}。",
]

# Lines that carry no intent: every label's excerpts start with them, so they cannot give the answer away.
OPENINGS = ["你好", "在吗", "我上周在你们平台订了酒店", "我是会员", "我现在在杭州", "有个问题想问一下", "我用的是手机号登录"]
AGENT_LINES = ["您好，请问有什么可以帮您？", "您好，请说。", "好的，请您详细说一下。", "您好，这边是酒店客服。"]
# A customer line that says nothing of the intent: the assistant asks before it can answer.
VAGUE = ["我的订单有点问题", "想咨询一下我的预订", "帮我看看我这个订单", "有件事要麻烦你们"]
CLARIFY = "好的，请问具体遇到了什么问题？"


def _excerpt(last_line: str, rng: random.Random) -> str:
    """A dialogue excerpt: 0-2 neutral customer/agent exchanges, then the customer's `last_line`."""
    lines = []
    for opening in rng.sample(OPENINGS, rng.choice([0, 1, 1, 2])):
        lines += [f"客户：{opening}", f"客服：{rng.choice(AGENT_LINES)}"]
    lines.append(f"客户：{last_line}")
    return "\n".join(lines)


def _conversation(label: str, issue: str, phrasing: str, rng: random.Random) -> dict:
    line = phrasing.format(issue=issue, order=rng.randint(10_000_000, 99_999_999))
    messages = [{"role": "system", "content": SYSTEM}] if rng.random() < 0.9 else []
    if rng.random() < 0.25:
        # Multi-turn: a vague excerpt, the assistant's clarifying question, then the intent.
        messages += [
            {"role": "user", "content": _excerpt(rng.choice(VAGUE) + "。", rng)},
            {"role": "assistant", "content": CLARIFY},
            {"role": "user", "content": line},
        ]
    else:
        messages.append({"role": "user", "content": _excerpt(line, rng)})
    messages.append({"role": "assistant", "content": label})
    return {"messages": messages, "metadata": {"label": label}}


def make(seed: int = 11, n_train: int = 360, n_test: int = 90) -> tuple[list[dict], list[dict]]:
    """Return (train, test) records; test (issue, phrasing) combinations never appear in train."""
    rng = random.Random(seed)
    combos = [(label, issue, p) for label, issues in ISSUES.items() for issue in issues for p in PHRASINGS]
    rng.shuffle(combos)
    test_combos, train_combos = combos[:n_test], combos[n_test:n_test + n_train]
    train = [_conversation(*c, rng) for c in train_combos]
    test = [_conversation(*c, rng) for c in test_combos]
    return train, test


if __name__ == "__main__":
    write("intents", *make())
