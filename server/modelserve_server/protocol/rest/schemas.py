"""Pydantic models that *document* the REST API in its OpenAPI schema.

They are never used to parse or serialise traffic: the inference path decodes bodies with orjson and
numpy (:mod:`.codec`), which is far faster than pydantic and gives tensor-specific error messages.
The schema still matters: schemathesis generates requests from it, and clients read it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorResponse(BaseModel):
    """Every non-2xx answer: ``{"error": "<what and which tensor>"}``."""

    error: str


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1 marks a dynamic dimension")


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    providers: list[str] = Field(description="ONNX Runtime execution providers in use")
    parameters: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "execution_provider (the provider that actually runs the model), execution_providers "
            "(every active one), requested_providers, provider_fallback (true/false) and "
            "provider_fallback_reason"
        ),
    )


class RequestInput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = Field(
        default=None, description="binary_data_size: bytes of this input in the binary section"
    )
    data: list[Any] | None = Field(default=None, description="flat or nested; BYTES as strings")


class RequestOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = Field(default=None, description="binary_data: true/false")


class InferenceRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] | None = Field(default=None, description="binary_data_output: true/false")
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[ResponseOutput]


class ModelConfig(BaseModel):
    """Triton's model configuration (the fields perf_analyzer and tritonclient read)."""

    name: str
    platform: str
    max_batch_size: int
    input: list[dict[str, Any]]
    output: list[dict[str, Any]]


class ModelStatistics(BaseModel):
    model_stats: list[dict[str, Any]]


class RepositoryModel(BaseModel):
    name: str
    version: str
    state: str
