"""RFC 9457 problem details, as every error of the API is sent."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_PREFIX = "urn:alai:problem:"


class FieldError(BaseModel):
    """One invalid input: where it is (`body.title`, `query.limit`) and what is wrong."""

    field: str
    message: str
    type: str | None = None


class Problem(BaseModel):
    # Extension members (request_id, retry hints …) are allowed by the RFC and kept.
    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    request_id: str | None = None
    errors: list[FieldError] = Field(default_factory=list)

    @property
    def slug(self) -> str:
        """The stable short name of the problem type (`not-found`, `validation` …)."""
        return self.type.removeprefix(PROBLEM_TYPE_PREFIX)


def problem_type(slug: str) -> str:
    return PROBLEM_TYPE_PREFIX + slug
