"""fastchat-gateway: an OpenAI-compatible API server for FastChat controller/worker clusters.

Importing the package stays cheap (no Flask, no requests): gunicorn's master imports app.config to check the
settings before it forks, and the gevent worker class must patch the standard library before requests loads.
"""


def __getattr__(name: str):
    if name == "create_app":
        from app.factory import create_app

        return create_app
    raise AttributeError(f"module 'app' has no attribute {name!r}")
