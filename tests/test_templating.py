"""render_template_async: templates that await, on Jinja's async mode."""

import asyncio
import time

import gevent
import pytest
from flask import Flask, render_template, template_rendered

import geventflask
from geventflask.templating import render_template_async, render_template_string_async

geventflask.patch()

LAYOUT = "<title>{% block title %}{% endblock %}</title>{% block body %}{% endblock %}"
PAGE = """{% extends "layout.html" %}
{% block title %}{{ site }}{% endblock %}
{% block body %}{{ greet(name) }}:{% for n in count_up(3) %}{{ n }},{% endfor %}
{% include "footer.html" %}{% endblock %}"""
FOOTER = "[{{ url_for('page') }}|{{ name|upper }}]"


async def greet(name):
    await asyncio.sleep(0.01)
    return f"hello {name}"


async def count_up(limit):
    for n in range(limit):
        await asyncio.sleep(0)
        yield n


@pytest.fixture
def app(tmp_path):
    for name, source in {
        "layout.html": LAYOUT,
        "page.html": PAGE,
        "footer.html": FOOTER,
        "plain.html": "plain {{ name }}",
    }.items():
        (tmp_path / name).write_text(source)
    app = Flask(__name__, template_folder=str(tmp_path))

    @app.context_processor
    def site():
        return {"site": "Example", "greet": greet, "count_up": count_up}

    @app.route("/page")
    async def page():
        return await render_template_async("page.html", name="ada")

    @app.route("/plain-async")
    async def plain_async():
        return await render_template_async(["missing.html", "plain.html"], name="async")

    @app.route("/plain-sync")
    def plain_sync():
        return render_template("plain.html", name="sync")

    @app.route("/slow")
    async def slow():
        return await render_template_string_async(
            "{{ nap(0.5, 'done') }}", nap=asyncio.sleep
        )

    return app


def test_template_awaits_coroutines_and_async_iterators(app):
    rendered = []
    with template_rendered.connected_to(
        lambda sender, template, context: rendered.append(template.name), app
    ):
        response = app.test_client().get("/page")
    assert response.status_code == 200
    assert response.text == ("<title>Example</title>hello ada:0,1,2,\n[/page|ADA]")
    assert rendered == ["page.html"]


def test_sync_and_async_rendering_of_one_template_keep_apart(app):
    client = app.test_client()
    for _ in range(2):
        assert client.get("/plain-sync").text == "plain sync"
        assert client.get("/plain-async").text == "plain async"


def test_awaiting_templates_render_concurrently(app):
    client = app.test_client()
    started = time.monotonic()
    jobs = [gevent.spawn(client.get, "/slow") for _ in range(20)]
    gevent.joinall(jobs, raise_error=True)
    took = time.monotonic() - started
    assert [job.value.text for job in jobs] == ["done"] * 20
    assert took < 5, took  # 20 x 0.5 s one after another would be 10 s
