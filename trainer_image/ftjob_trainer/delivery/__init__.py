"""Delivering a finished job's model: merge a LoRA adapter into its base, check the quality
gate, write the model card, push the model to an OCI registry (spec.output)."""
