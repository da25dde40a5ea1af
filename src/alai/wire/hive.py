"""HiveMind: topics, messages, subscriptions and the agents' shared memory."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from alai.wire.mc import ImportTableReport  # the hivemind.db import reports per table as Mission Control's does

# A topic is dotted segments of letters, digits, `_` and `-` (agents.status, tenders.new).
TOPIC_PATTERN = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$"
TOPIC_MAX = 200
PAYLOAD_MAX_BYTES = 256 * 1024
BATCH_MAX = 1000
# A request's whole body (413 past it): a message's JSON may take several times its
# payload's size (escapes), and a batch is read whole before its messages are checked.
MESSAGE_BODY_MAX_BYTES = 2 * 1024 * 1024
BATCH_BODY_MAX_BYTES = 16 * 1024 * 1024


class MessageIn(BaseModel):
    """One message: `json` (any JSON value) or `text`, not both."""

    model_config = ConfigDict(extra="forbid")

    json_: Any = Field(default=None, alias="json")
    text: str | None = None
    key: str | None = Field(default=None, max_length=200)
    headers: dict[str, str] = Field(default_factory=dict, max_length=50)

    @model_validator(mode="after")
    def _one_payload(self) -> MessageIn:
        has_json = "json_" in self.model_fields_set
        if has_json == (self.text is not None):
            raise ValueError("give exactly one of `json` and `text`")
        return self


class Batch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    messages: list[MessageIn] = Field(min_length=1, max_length=BATCH_MAX)


class Published(BaseModel):
    topic: str
    ids: list[int]
    positions: list[str]


class Message(BaseModel):
    _text: str | None = PrivateAttr(default=None)

    id: int
    position: str
    topic: str
    sender: str
    key: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    content_type: Literal["json", "text"]
    payload: Any
    created_at: datetime


    def json_text(self) -> str:
        """The JSON form, made once: a message fanned out to many subscribers is
        serialised once, not once per subscriber."""
        if self._text is None:
            self._text = self.model_dump_json()
        return self._text


class MessagePage(BaseModel):
    items: list[Message]
    next_after_id: int | None = None


class TopicSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str | None = Field(default=None, max_length=2000)
    retention_max_age_seconds: int | None = Field(default=None, ge=1)
    retention_max_count: int | None = Field(default=None, ge=1)


class Topic(BaseModel):
    name: str
    description: str | None = None
    retention_max_age_seconds: int | None = None
    retention_max_count: int | None = None
    message_count: int
    last_message_at: datetime | None = None
    created_at: datetime
    created_by: str


class MemoryEntry(BaseModel):
    namespace: str
    key: str
    value: Any
    version: int
    updated_at: datetime
    updated_by: str


class MemoryPut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: Any


class Agent(BaseModel):
    """An agent of the registry (filled by the import of hivemind.db)."""

    name: str
    status: str | None = None
    last_seen: datetime | None = None
    capabilities: Any = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
    created_by: str


class HiveImportReport(BaseModel):
    """What an import of a legacy hivemind.db did (or, with dry_run, would do)."""

    source: str
    source_sha256: str
    dry_run: bool
    already_imported: bool = False
    # One per source table, then `hive_import_rows` (the verbatim copies).
    tables: list[ImportTableReport]
    topic_map: dict[str, str] = Field(default_factory=dict)  # legacy channel -> topic
    namespace_map: dict[str, str] = Field(default_factory=dict)  # memory's agent -> namespace
    column_map: dict[str, str] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)
    duration_seconds: float
