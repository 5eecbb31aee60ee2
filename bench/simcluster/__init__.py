"""The simulated GPU cluster's parts (``bench/sim_cluster.py``): a modelled vLLM engine (``engine``) at rates from
published figures (``rates``) with recorded answer lengths (``lengths``), and a modelled embedding (``embedding``)."""

TIME_SCALE = "AMR_SIM_TIME_SCALE"
"""Environment of the cluster's nodes: engine seconds per wall second (k)."""
STATS_DIR = "AMR_SIM_STATS_DIR"
"""Environment of the cluster's nodes: where each engine appends its counters."""
SANDBOX_CHECK_S = "AMR_SIM_SANDBOX_CHECK_S"
"""Environment of the cluster's nodes: the real sandbox's seconds per check, measured here."""
ENGINE_START_S = "AMR_SIM_ENGINE_START_S"
"""Environment of the cluster's nodes: simulated seconds an engine takes to start (load, compile) before it serves."""
