"""Student fine-tuning on Ray Train: FSDP2 over a TorchTrainer's workers, the rows streamed from Ray Data.

``train.data``: the distill dataset, checked, tokenized and packed once, streamed to each worker; ``train.model``:
the student sharded, checkpointed and saved; ``train.loop``: what each worker runs; ``train.trainer.run``: the
driver (``amr train``, ``python -m jobs.train``).
"""
