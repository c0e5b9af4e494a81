# The quick start's server: `gunicorn -c gunicorn.conf.py examples.quickstart:app`
import os

bind = "127.0.0.1:8000"
workers = 1
worker_class = "geventflask.GeventWorker"  # patches in each worker, after fork
worker_connections = 1000
graceful_timeout = 30
# gunicorn 27 opens a control socket shared by every instance; not needed here.
control_socket_disable = True

# --- Metrics (optional) ------------------------------------------------------
# With GEVENTFLASK_METRICS = True in the app's config, each worker sends its
# gauges (loop lag, tasks, background tasks, greenlets, requests in flight):
#
# * to statsd, through gunicorn's own client: uncomment these two lines.
# statsd_host = "127.0.0.1:8125"
# statsd_prefix = "myapp"
#
# * to prometheus_client (pip install geventflask[metrics]). With several
#   workers, start gunicorn with PROMETHEUS_MULTIPROC_DIR set to an empty
#   directory, and set GEVENTFLASK_METRICS_PATH = "/-/metrics" to serve the sum
#   over the workers. The two hooks below keep that directory right; they do
#   nothing when the variable is unset.


def on_starting(server):
    """Empty the multiprocess directory: gauges of an earlier run must not count."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory and os.path.isdir(directory):
        for name in os.listdir(directory):
            if name.endswith(".db"):
                os.remove(os.path.join(directory, name))


def child_exit(server, worker):
    """Drop a dead worker's live gauges (prometheus_client multiprocess mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from geventflask.health import prometheus_worker_exited

        prometheus_worker_exited(worker.pid)
