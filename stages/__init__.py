"""Thin DVC stages: read params -> call pipeline -> write the declared outs (atomically)."""
