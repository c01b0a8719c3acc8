"""The base of every settings model: an unknown key is an error, and settings never change."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class SettingsModel(BaseModel):
    """A section of ``toolbus.toml``: unknown keys are refused (a typo fails at start-up), frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)
