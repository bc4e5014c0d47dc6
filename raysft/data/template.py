"""Chat templating and loss masks (see DESIGN.md decision 2)."""

# ChatML, used when a tokenizer ships no chat template of its own. Every turn ends with <|im_end|>,
# which is also the EOS token the model learns to emit after an assistant answer.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
