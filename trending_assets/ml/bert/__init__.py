"""BERT-family genre model: model and save format (model), batching (data), the
training loop (loop), checkpoints (checkpoint), torchrun launch (launch) and the
stand-alone trainer (train)."""
