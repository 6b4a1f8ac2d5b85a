"""Typed params of the Amazon scaling branch (sections ``amazon``, ``pretrain``, ``finetune``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AmazonParams:
    def validate(self) -> None:
        pass


@dataclass(frozen=True)
class PretrainParams:
    def validate(self) -> None:
        pass


@dataclass(frozen=True)
class FinetuneParams:
    def validate(self) -> None:
        pass
