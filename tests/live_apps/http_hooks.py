"""gunicorn config for the connection tests: record the request hooks."""

import os


def pre_request(worker, req):
    with open(os.environ["HOOK_LOG"], "a") as log:
        log.write(f"pre {req.method} {req.path}\n")


def post_request(worker, req, environ, resp):
    with open(os.environ["HOOK_LOG"], "a") as log:
        log.write(f"post {req.method} {req.path} {resp.status}\n")
