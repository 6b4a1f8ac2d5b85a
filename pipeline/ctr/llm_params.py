"""Typed params of the LLM-CTR stages (section ``llm`` of params.yaml), loaded by pipeline.core.config."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LlmParams:
    """Filled in by the LLM-CTR issue."""

    def validate(self) -> None:
        pass
