"""Student fine-tuning on Ray Train: TRL's SFTTrainer (a transformers Trainer) in a TorchTrainer.

``train.data``: the distill dataset as prompt-completion examples; ``train.loop``: what each worker runs;
``train.trainer.run``: the driver (``amr train``, ``python -m jobs.train``).
"""
