"""The Function App: builds it and registers the blueprints in functions/. Nothing else."""

from __future__ import annotations

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
