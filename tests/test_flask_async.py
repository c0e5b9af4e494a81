"""Flask's async behaviours, after geventflask.patch(), through Flask's test client.

Each behaviour Flask documents for ``async def`` (views, request hooks,
error handlers, View and MethodView, blueprints, signals, context processors,
copy_current_request_context) is checked here in our own words; on top, what
geventflask promises beyond stock Flask: every coroutine is a real task on
the one shared hub loop, in the request's own context.

patch() is process-wide and idempotent: the first test module that calls it
patches the whole test process, as a worker is patched.
"""

import asyncio
import contextvars
import functools
import gc
import weakref

import gevent
import gevent.event
import pytest
from flask import (
    Blueprint,
    Flask,
    copy_current_request_context,
    current_app,
    g,
    render_template_string,
    request,
    request_started,
    session,
)
from flask.views import MethodView, View

import geventflask
from geventflask import flask_hooks

geventflask.patch()

tenant = contextvars.ContextVar("tenant", default="none")


class AppError(Exception):
    pass


class BlueprintError(Exception):
    pass


class EchoView(View):
    methods = ["GET", "POST"]

    async def dispatch_request(self):
        await asyncio.sleep(0)
        return f"view {request.method}"


class EchoMethodView(MethodView):
    async def get(self):
        await asyncio.sleep(0)
        return "methodview GET"

    async def post(self):
        await asyncio.sleep(0)
        return f"methodview POST {request.get_data(as_text=True)}"


@pytest.fixture
def app():
    app = Flask(__name__)
    app.secret_key = "test only"

    @app.route("/", methods=["GET", "POST"])
    @app.route("/again", methods=["GET", "POST"])
    async def index():
        await asyncio.sleep(0)
        return f"index {request.method}"

    @app.errorhandler(AppError)
    async def app_error(error):
        await asyncio.sleep(0)
        return f"app handler: {type(error).__name__}", 412

    @app.route("/error")
    async def raise_app_error():
        await asyncio.sleep(0)
        raise AppError

    blueprint = Blueprint("bp", __name__)

    @blueprint.route("/", methods=["GET", "POST"])
    async def bp_index():
        await asyncio.sleep(0)
        return f"bp {request.method}"

    @blueprint.errorhandler(BlueprintError)
    async def bp_error(error):
        return f"bp handler: {request.blueprint}", 412

    @blueprint.route("/error")
    async def raise_bp_error():
        raise BlueprintError

    app.register_blueprint(blueprint, url_prefix="/bp")
    app.add_url_rule("/view", view_func=EchoView.as_view("view"))
    app.add_url_rule("/methodview", view_func=EchoMethodView.as_view("methodview"))
    return app


@pytest.fixture
def client(app):
    return app.test_client()


def test_patch_installs_the_hub_hook_for_every_flask_app(app):
    class Subclass(Flask):
        pass

    assert Flask.async_to_sync is flask_hooks.run_on_hub_loop
    assert Subclass("sub").async_to_sync.__func__ is flask_hooks.run_on_hub_loop
    assert geventflask.is_patched()


@pytest.mark.parametrize(
    ("path", "label"),
    [
        ("/", "index"),
        ("/again", "index"),
        ("/bp/", "bp"),
        ("/view", "view"),
        ("/methodview", "methodview"),
    ],
)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_async_views_answer_every_method(client, path, label, method):
    response = client.open(path, method=method)
    assert response.status_code == 200
    assert response.get_data(as_text=True).startswith(f"{label} {method}")


def test_method_view_gets_the_request_body(client):
    response = client.post("/methodview", data="payload")
    assert response.get_data(as_text=True) == "methodview POST payload"


@pytest.mark.parametrize(
    ("path", "body"),
    [("/error", "app handler: AppError"), ("/bp/error", "bp handler: bp")],
)
def test_async_error_handlers_answer(client, path, body):
    response = client.get(path)
    assert response.status_code == 412
    assert response.get_data(as_text=True) == body


def test_async_hooks_run_in_flasks_documented_order():
    app = Flask(__name__)
    calls = []

    def record(name):
        async def hook(*args):
            await asyncio.sleep(0)
            calls.append(name)
            return args[0] if args else None

        hook.__name__ = name
        return hook

    blueprint = Blueprint("bp", __name__)
    app.before_request(record("app before"))
    app.after_request(record("app after"))
    app.teardown_request(record("app teardown"))
    app.teardown_appcontext(record("appcontext teardown"))
    blueprint.before_request(record("bp before"))
    blueprint.after_request(record("bp after"))
    blueprint.teardown_request(record("bp teardown"))

    @blueprint.route("/")
    async def view():
        calls.append("view")
        return "ok"

    app.register_blueprint(blueprint, url_prefix="/bp")
    assert app.test_client().get("/bp/").get_data() == b"ok"
    assert calls == [
        "app before",
        "bp before",
        "view",
        "bp after",
        "app after",
        "bp teardown",
        "app teardown",
        "appcontext teardown",
    ]


def test_async_hooks_also_wrap_sync_views():
    app = Flask(__name__)

    @app.before_request
    async def before():
        g.before = await asyncio.sleep(0, result="set in before_request")

    @app.after_request
    async def after(response):
        response.headers["X-After"] = "async"
        return response

    @app.route("/")
    def sync_view():
        return g.before

    response = app.test_client().get("/")
    assert response.get_data() == b"set in before_request"
    assert response.headers["X-After"] == "async"


def test_async_before_request_may_answer_instead_of_the_view():
    app = Flask(__name__)
    reached = []

    @app.before_request
    async def refuse():
        if request.args.get("token") != "secret":
            return "refused", 403
        return None

    @app.route("/")
    async def view():
        reached.append(True)
        return "allowed"

    client = app.test_client()
    assert client.get("/").status_code == 403
    assert reached == []
    assert client.get("/?token=secret").get_data() == b"allowed"


def test_unhandled_error_reaches_async_500_handler_and_teardowns():
    app = Flask(__name__)
    seen = {}

    @app.route("/")
    async def view():
        await asyncio.sleep(0)
        raise KeyError("lost")

    @app.errorhandler(500)
    async def server_error(error):
        await asyncio.sleep(0)
        return f"500 handler: {type(error.original_exception).__name__}", 500

    @app.teardown_request
    async def teardown_request(exc):
        seen["request"] = exc

    @app.teardown_appcontext
    async def teardown_appcontext(exc):
        seen["appcontext"] = exc

    client = app.test_client()
    response = client.get("/")
    assert response.status_code == 500
    assert response.get_data() == b"500 handler: KeyError"
    assert isinstance(seen["request"], KeyError)
    assert isinstance(seen["appcontext"], KeyError)
    # The app keeps serving.
    assert client.get("/").status_code == 500


def test_request_globals_work_inside_coroutines_and_after_await():
    app = Flask(__name__)
    app.config["NAME"] = "configured"
    app.secret_key = "test only"

    @app.route("/visit/<who>")
    async def visit(who):
        g.who = who
        await asyncio.sleep(0.01)
        session["visits"] = session.get("visits", 0) + 1
        await asyncio.sleep(0)
        return {
            "arg": request.args["x"],
            "who": g.who,
            "path": request.path,
            "app": current_app.config["NAME"],
            "visits": session["visits"],
        }

    client = app.test_client()
    first = client.get("/visit/ann?x=1").get_json()
    assert first == {
        "arg": "1",
        "who": "ann",
        "path": "/visit/ann",
        "app": "configured",
        "visits": 1,
    }
    # The session written inside the coroutine was saved with the response.
    assert client.get("/visit/ann?x=2").get_json()["visits"] == 2


def test_concurrent_requests_each_keep_their_own_context():
    app = Flask(__name__)

    @app.before_request
    async def before():
        g.number = int(request.args["n"])
        tenant.set(f"tenant-{request.args['n']}")

    @app.route("/")
    async def view():
        # Every request sleeps at once, so their coroutines interleave.
        await asyncio.sleep(0.2)
        return {
            "arg": request.args["n"],
            "g": g.number,
            "tenant": tenant.get(),
        }

    def fetch(n):
        return app.test_client().get(f"/?n={n}").get_json()

    greenlets = [gevent.spawn(fetch, n) for n in range(30)]
    gevent.joinall(greenlets, raise_error=True, timeout=20)
    for n, done in enumerate(greenlets):
        assert done.value == {"arg": str(n), "g": n, "tenant": f"tenant-{n}"}


def test_context_variable_set_in_async_before_request_reaches_the_view():
    app = Flask(__name__)

    @app.before_request
    async def pick_tenant():
        tenant.set(request.headers["X-Tenant"])

    @app.route("/async")
    async def async_view():
        return tenant.get()

    @app.route("/sync")
    def sync_view():
        return tenant.get()

    client = app.test_client()
    assert client.get("/async", headers={"X-Tenant": "acme"}).get_data() == b"acme"
    assert client.get("/sync", headers={"X-Tenant": "initech"}).get_data() == b"initech"


def test_a_coroutine_view_is_a_real_task_that_timeouts_can_cancel():
    app = Flask(__name__)

    @app.route("/")
    async def view():
        task = asyncio.current_task()
        try:
            async with asyncio.timeout(0.05):
                await asyncio.sleep(30)
        except TimeoutError:
            timed_out = True
        else:
            timed_out = False
        return {
            "is_task": isinstance(task, asyncio.Task),
            "still_current": asyncio.current_task() is task,
            "timed_out": timed_out,
        }

    assert app.test_client().get("/").get_json() == {
        "is_task": True,
        "still_current": True,
        "timed_out": True,
    }


def test_every_request_runs_on_the_one_shared_loop():
    app = Flask(__name__)

    @app.route("/")
    async def view():
        return {"loop": id(asyncio.get_running_loop())}

    client = app.test_client()
    loops = {client.get("/").get_json()["loop"] for _ in range(20)}
    assert loops == {id(geventflask.get_loop())}


def test_sync_views_see_no_running_loop_and_may_run_their_own():
    app = Flask(__name__)

    in_flight = gevent.event.Event()

    @app.route("/async")
    async def async_view():
        in_flight.set()
        await asyncio.sleep(0.3)
        return "slow"

    @app.route("/sync")
    def sync_view():
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            leaked = False
        else:
            leaked = True
        return {"leaked": leaked, "ran": asyncio.run(asyncio.sleep(0, result=7))}

    slow = gevent.spawn(app.test_client().get, "/async")
    assert in_flight.wait(5)
    assert app.test_client().get("/sync").get_json() == {"leaked": False, "ran": 7}
    assert slow.get(timeout=10).get_data() == b"slow"


def test_async_signal_receivers_run():
    app = Flask(__name__)
    received = []

    async def on_request_started(sender, **extra):
        await asyncio.sleep(0)
        received.append(request.path)

    @app.route("/")
    def view():
        return "ok"

    with request_started.connected_to(on_request_started, app):
        app.test_client().get("/")
    assert received == ["/"]


def test_async_template_context_processor():
    app = Flask(__name__)

    @app.context_processor
    async def user():
        await asyncio.sleep(0)
        return {"user": request.args["user"]}

    @app.route("/sync")
    def sync_view():
        return render_template_string("hello {{ user }}")

    @app.route("/async")
    async def async_view():
        # render_template() is sync: Flask runs the processor through
        # async_to_sync, here from sync code inside the view's own task.
        await asyncio.sleep(0)
        return render_template_string("hi {{ user }}")

    client = app.test_client()
    assert client.get("/sync?user=ann").get_data() == b"hello ann"
    assert client.get("/async?user=bob").get_data() == b"hi bob"


def test_copy_current_request_context_runs_an_async_function_later():
    app = Flask(__name__)
    spawned = []

    @app.route("/<name>")
    def view(name):
        @copy_current_request_context
        async def later():
            await asyncio.sleep(0)
            return request.view_args["name"]

        spawned.append(gevent.spawn(later))
        return "scheduled"

    assert app.test_client().get("/job").get_data() == b"scheduled"
    assert spawned[0].get(timeout=5) == "job"


def test_background_task_outlives_the_response():
    app = Flask(__name__)
    finished = gevent.event.Event()

    @app.route("/")
    async def view():
        async def work():
            await asyncio.sleep(0.1)
            finished.set()

        asyncio.create_task(work())
        return "started"

    assert app.test_client().get("/").get_data() == b"started"
    assert finished.wait(5)


def test_sync_code_inside_an_async_view_may_await():
    app = Flask(__name__)

    def sync_helper():
        # g and the request are the view's: the awaited coroutine runs in
        # a copy of the view's context.
        return geventflask.await_(asyncio.sleep(0, result=f"hello {g.user}"))

    @app.route("/")
    async def view():
        g.user = request.args["user"]
        return sync_helper()

    response = app.test_client().get("/?user=ann")
    assert response.status_code == 200
    assert response.get_data(as_text=True) == "hello ann"


async def greet(name):
    await asyncio.sleep(0)
    return f"hello {name}"


def test_the_sync_wrapper_of_a_function_is_made_once():
    app = Flask(__name__)
    wrapper = app.ensure_sync(greet)
    assert wrapper("ann") == "hello ann"
    assert app.ensure_sync(greet) is wrapper
    assert Flask("other").ensure_sync(greet) is wrapper
    assert wrapper.__name__ == "greet"
    assert wrapper.__wrapped__ is greet


def test_the_sync_wrapper_of_a_method_is_made_once_and_bound_per_instance():
    app = Flask(__name__)
    first, second = EchoMethodView(), EchoMethodView()
    for_first, for_second = app.ensure_sync(first.get), app.ensure_sync(second.get)
    assert for_first.__func__ is for_second.__func__
    assert for_second.__self__ is second
    with app.test_request_context("/methodview"):
        assert for_second() == "methodview GET"
    # The kept wrapper does not keep the instance it was bound to.
    instance = weakref.ref(second)
    del second, for_second
    gc.collect()
    assert instance() is None


def test_a_copied_wrapper_attribute_is_not_reused():
    app = Flask(__name__)
    app.ensure_sync(greet)

    @functools.wraps(greet)  # copies greet's __dict__, our wrapper with it
    async def shout(name):
        return (await greet(name)).upper()

    assert app.ensure_sync(shout)("bob") == "HELLO BOB"


def test_async_functions_made_per_request_are_not_kept_alive():
    app = Flask(__name__)
    made = []

    @app.route("/")
    def view():
        async def per_request():
            return "done"

        made.append(weakref.ref(per_request))
        return app.ensure_sync(per_request)()

    client = app.test_client()
    for _ in range(3):
        assert client.get("/").get_data() == b"done"
    gc.collect()
    assert [ref() for ref in made] == [None, None, None]
