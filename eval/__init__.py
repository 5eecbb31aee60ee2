"""EvalPlus evaluation of a model (issue 5), offline: ``data`` (the vendored datasets as evalplus reads them,
whole or the first N tasks), ``generate`` (answers through the vLLM engine, evalplus's prompt and sanitizer),
``score`` (``evalplus.evaluate`` in process). The job is ``jobs/eval.py`` (``amr eval``)."""
