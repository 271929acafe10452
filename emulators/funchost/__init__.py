"""A local stand-in for the Azure Functions host (Core Tools cannot be installed offline).

python -m emulators.funchost [--app function_app:app] [--port 7071] [--settings local.settings.json]

It indexes an `azure.functions.FunctionApp` (Python v2 model) with the library's own API and runs
its HTTP, timer and queue triggers with the real host's semantics; see `host.py` for the admin API
and `launcher.py` for starting it from tests.
"""
