"""The Function App: builds it and registers the blueprints in functions/. Nothing else."""

from __future__ import annotations

import azure.functions as func

from functions import admin, notifications, timers, worker

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
for blueprint in (notifications.bp, worker.bp, timers.bp, admin.bp):
    app.register_functions(blueprint)
