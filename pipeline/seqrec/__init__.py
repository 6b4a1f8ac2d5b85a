"""The Amazon scaling branch: formats, synthetic world, ETL, item tokenizer, SASRec-style models."""
