"""Response models of the provider catalog (GET /providers)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ProviderConfigField(BaseModel):
    name: str
    label: str
    description: str | None = None
    pattern: str = Field(description="Anchored regular expression the whole value must match")
    example: str


class ProviderOut(BaseModel):
    id: str = Field(description="Pass as `provider` to POST /connections")
    name: str
    config: list[ProviderConfigField] = Field(description="Values the tenant enters for its own account")
    default_scopes: list[str]
    suggested_scopes: list[str]
    scope_delimiter: str
    metadata: list[str] = Field(description="Values kept from the provider's answers, returned with the token")
    docs_url: str = Field(description="The provider's own documentation of its OAuth2")


class ProviderList(BaseModel):
    items: list[ProviderOut]
