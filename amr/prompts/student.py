"""The prompt formats a student is trained with (``train.template``) and evaluated with (``eval.template``)."""

from __future__ import annotations

ALPACA = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
    "\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)
"""The Alpaca / WizardCoder prompt (``template: alpaca``); the response follows, then the EOS token."""

VERBATIM = "{% for message in messages %}{{ message['content'] }}{% endfor %}"
"""A chat template that renders the messages' texts one after the other, nothing added: an engine's chat request
with it sends an Alpaca prompt (and a prefilled answer) as the model was trained on it, without the model's own
chat template around it."""
