"""A small FunctionApp of the host's own tests: every trigger and binding shape the host serves.

Queue names come from app settings (`%WORK_QUEUE%`, `%TICK_QUEUE%`) so each test host uses its own.
The functions record what they saw in side queues (`<queue>-seen`), which the tests read.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading

import azure.functions as func
from azure.storage.queue import QueueClient

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
bp = func.Blueprint()  # registered below, as function_app.py registers the blueprints of functions/

_running = {"slow_tick": 0, "parallel": 0}
_lock = threading.Lock()


def record(queue: str, item: dict[str, object]) -> None:
    """Write what a function saw to `<queue>-seen` (plain text, read back by the tests)."""
    client = QueueClient.from_connection_string(os.environ["AzureWebJobsStorage"], f"{queue}-seen")  # noqa: SIM112
    with client:
        try:
            client.create_queue()
        except Exception:
            pass  # exists already
        client.send_message(json.dumps(item))


@app.route(route="hello/{name}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def hello(req: func.HttpRequest) -> func.HttpResponse:
    body = {
        "name": req.route_params["name"],
        "q": req.params.get("q"),
        "method": req.method,
        "header": req.headers.get("X-Test"),
        "url": req.url,
    }
    return func.HttpResponse(json.dumps(body), mimetype="application/json")


@app.route(route="echo", methods=["POST", "PUT"])  # the app's default level: function
def echo(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(
        req.get_body(), status_code=201, headers={"X-Echo": "yes"}, mimetype="application/octet-stream"
    )


@app.route(route="keys/rotate", methods=["POST"], auth_level=func.AuthLevel.ADMIN)
def rotate(req: func.HttpRequest) -> str:
    return "rotated"


@bp.route(route="items/{id:int}/{*rest}")
async def item(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    await asyncio.sleep(0)
    body = {
        "id": int(req.route_params["id"]),
        "rest": req.route_params.get("rest"),
        "fn": context.function_name,
    }
    return func.HttpResponse(json.dumps(body), mimetype="application/json")


@bp.route(route="boom", auth_level=func.AuthLevel.ANONYMOUS)
def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("planned failure")


@bp.route(route="graph/notify", methods=["POST"])  # function level: Graph passes the key back (?code=)
def graph_webhook(req: func.HttpRequest) -> func.HttpResponse:
    return graph_webhook_open(req)


@bp.route(route="graph/open", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def graph_webhook_open(req: func.HttpRequest) -> func.HttpResponse:
    """A Graph change-notification endpoint: answers the validation handshake, records each notification."""
    token = req.params.get("validationToken")
    if token is not None:
        return func.HttpResponse(token, mimetype="text/plain")
    for note in req.get_json()["value"]:
        seen = {k: note.get(k) for k in ("subscriptionId", "clientState", "changeType")}
        record(f"{os.environ['WORK_QUEUE']}-graph", seen)
    return func.HttpResponse(status_code=202)


@bp.route(route="enqueue", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@bp.queue_output(arg_name="out", queue_name="%WORK_QUEUE%", connection="AzureWebJobsStorage")
def enqueue(req: func.HttpRequest, out: func.Out[str]) -> func.HttpResponse:
    out.set(req.get_body().decode("utf-8"))
    return func.HttpResponse(status_code=202)


@bp.queue_trigger(arg_name="msg", queue_name="%WORK_QUEUE%", connection="AzureWebJobsStorage")
def work(msg: func.QueueMessage) -> None:
    """Fails while its dequeue count is at most the job's `fail_times`."""
    job = msg.get_json()
    seen = {"id": job["id"], "dequeue_count": msg.dequeue_count, "message_id": msg.id}
    seen["has_times"] = msg.insertion_time is not None and msg.expiration_time is not None
    record(os.environ["WORK_QUEUE"], seen)
    if (msg.dequeue_count or 0) <= int(job.get("fail_times", 0)):
        raise RuntimeError("planned failure")


@bp.queue_trigger(arg_name="msg", queue_name="%WORK_QUEUE%-parallel", connection="AzureWebJobsStorage")
async def parallel(msg: str) -> None:
    """Takes half a second; records how many runs of it were in progress when it started."""
    with _lock:
        _running["parallel"] += 1
        concurrent = _running["parallel"]
    try:
        await asyncio.to_thread(
            record, f"{os.environ['WORK_QUEUE']}-parallel", {"id": msg, "concurrent": concurrent}
        )
        await asyncio.sleep(0.5)
    finally:
        with _lock:
            _running["parallel"] -= 1


@app.timer_trigger(arg_name="timer", schedule="%TICK_SCHEDULE%")
@app.queue_output(arg_name="$return", queue_name="%TICK_QUEUE%", connection="AzureWebJobsStorage")
def tick(timer: func.TimerRequest) -> str:
    return json.dumps({"past_due": timer.past_due})


@app.timer_trigger(arg_name="timer", schedule="0 0 0 1 1 *", run_on_startup=True)
@app.queue_output(arg_name="out", queue_name="%TICK_QUEUE%-startup", connection="AzureWebJobsStorage")
async def startup_tick(timer: func.TimerRequest, out: func.Out[str]) -> None:
    out.set("started")


@app.timer_trigger(arg_name="timer", schedule="%SLOW_SCHEDULE%")
def slow_tick(timer: func.TimerRequest) -> None:
    """Runs longer than its schedule's period: records how many runs of it were in progress."""
    with _lock:
        _running["slow_tick"] += 1
        concurrent = _running["slow_tick"]
    try:
        record(os.environ["TICK_QUEUE"], {"concurrent": concurrent})
        threading.Event().wait(1.5)
    finally:
        with _lock:
            _running["slow_tick"] -= 1


app.register_blueprint(bp)
