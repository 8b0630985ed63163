"""The public HTTP API, framework-free (see ``core.api.app``)."""

from core.api.app import Api
from core.api.http import ApiRequest, ApiResponse

__all__ = ["Api", "ApiRequest", "ApiResponse"]
