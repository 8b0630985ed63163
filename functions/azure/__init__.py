"""Azure Functions entry points: ``function_app.py`` (HTTP, inbox, timer) and its
composition root ``bootstrap.py``."""
