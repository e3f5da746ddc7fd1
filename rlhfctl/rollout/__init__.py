"""Generation behind one interface (base.Rollout): Hugging Face `generate` on the actor workers (hf.py) or vLLM
engines as Ray actors (vllm_rollout.py, engine.py), with the actor's weights synced to the engines after each
update (weight_sync.py)."""
