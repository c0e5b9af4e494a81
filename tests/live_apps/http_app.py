"""App for the HTTP/1.x connection tests: echoes what the server put in
the WSGI environ, so a test can compare our connection loop with gunicorn's."""

import os

from flask import Flask, Response, request, send_file, stream_with_context

import geventflask

geventflask.patch()

app = Flask(__name__)

ENVIRON_KEYS = (
    "REQUEST_METHOD",
    "PATH_INFO",
    "QUERY_STRING",
    "RAW_URI",
    "SCRIPT_NAME",
    "SERVER_PROTOCOL",
    "REMOTE_ADDR",
    "wsgi.url_scheme",
    "CONTENT_TYPE",
    "HTTP_X_FORWARDED_FOR",
    "HTTP_X_UNDER",
    "HTTP_ACCEPT",
    "wsgi.multithread",
)


@app.route("/env", methods=["GET", "POST", "HEAD"])
def env():
    seen = {key: request.environ.get(key) for key in ENVIRON_KEYS}
    seen["has_socket"] = "gunicorn.socket" in request.environ
    seen["pid"] = os.getpid()
    return seen


@app.route("/environ/<path:rest>", methods=["GET", "POST"])
def whole_environ(rest):
    """Every plain value of the environ, and the type of every other one."""
    plain = (str, int, float, bool, tuple, type(None))
    return {
        key: value if isinstance(value, plain) else type(value).__name__
        for key, value in request.environ.items()
        if not key.startswith(("werkzeug.", "flask."))
    }


@app.post("/echo")
def echo():
    return request.get_data()


@app.post("/ignore-body")
def ignore_body():
    return "ignored"


@app.get("/stream")
def stream():
    def chunks():
        for n in range(3):
            yield f"chunk {n};"

    return Response(stream_with_context(chunks()))


@app.get("/async")
async def async_view():
    return "async hello"


@app.get("/boom")
def boom():
    raise RuntimeError("the view failed on purpose")


@app.get("/file")
def file():
    """A whole file, which gunicorn sends with sendfile()."""
    return send_file(os.environ["SERVED_FILE"], mimetype="application/octet-stream")


@app.get("/gc")
def gc_settings():
    import gc

    return {"threshold": gc.get_threshold(), "frozen": gc.get_freeze_count()}


@app.get("/empty")
def empty():
    return "", 204
