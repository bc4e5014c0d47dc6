"""Helpers the data tests share."""

import json


def write_conversations(path, labels, prefix) -> str:
    """A JSON Lines file of one-turn conversations: `<prefix> question <i>` answered by labels[i]."""
    with open(path, "w", encoding="utf-8") as f:
        for i, lab in enumerate(labels):
            f.write(json.dumps({"messages": [{"role": "user", "content": f"{prefix} question {i}"},
                                             {"role": "assistant", "content": lab}]}) + "\n")
    return str(path)
