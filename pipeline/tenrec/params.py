"""Typed params of the Tenrec branch (sections ``tenrec``, ``retrieval``, ``ann``, ``ranking``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TenrecParams:
    def validate(self) -> None:
        pass


@dataclass(frozen=True)
class RetrievalParams:
    def validate(self) -> None:
        pass


@dataclass(frozen=True)
class AnnParams:
    def validate(self) -> None:
        pass


@dataclass(frozen=True)
class RankingParams:
    def validate(self) -> None:
        pass
