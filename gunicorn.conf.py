# The quick start's server: `gunicorn -c gunicorn.conf.py examples.quickstart:app`
bind = "127.0.0.1:8000"
workers = 1
worker_class = "geventflask.GeventWorker"  # patches in each worker, after fork
worker_connections = 1000
graceful_timeout = 30
# gunicorn 27 opens a control socket shared by every instance; not needed here.
control_socket_disable = True
