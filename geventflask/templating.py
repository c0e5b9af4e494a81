"""Template layer: render Jinja templates that await, from ``async def`` views.

Jinja's async mode lets a template call coroutine functions and loop over
async iterators (``{{ await_me() }}`` needs no ``await`` keyword). Flask's
environment is sync, and switching it to async mode would recompile every
template for every caller, so each app gets a second, async, environment:
an overlay of ``app.jinja_env`` that shares its loader, globals, filters
and tests but keeps its own compiled-template cache.
"""

from __future__ import annotations

import typing as t
import weakref

from flask import current_app
from flask.signals import before_render_template, template_rendered

__all__ = ["render_template_async", "render_template_string_async"]

#: Compiled templates the async environment keeps, as Jinja's default.
CACHE_SIZE = 400

_async_envs: weakref.WeakKeyDictionary[t.Any, t.Any] = weakref.WeakKeyDictionary()


def async_environment(app: t.Any) -> t.Any:
    """The async overlay of ``app.jinja_env``, made on first use."""
    sync_env = app.jinja_env
    env = _async_envs.get(sync_env)
    if env is None:
        env = sync_env.overlay(enable_async=True, cache_size=CACHE_SIZE)
        # Jinja before 3.1.5 ignored enable_async in overlay().
        env.is_async = True
        _async_envs[sync_env] = env
    return env


async def render_template_async(
    template_name_or_list: str | t.Any | list[str | t.Any], **context: t.Any
) -> str:
    """Render a template by name, letting it await coroutines and async iterators.

    ``await render_template_async("page.html", user=load_user())`` does what
    :func:`flask.render_template` does, on Jinja's async mode: template
    context processors, ``before_render_template`` and ``template_rendered``
    signals included.

    :param template_name_or_list: The template's name, or a list of names
        of which the first that exists is rendered.
    :param context: The variables the template sees.

    .. versionadded:: 0.1
    """
    app = t.cast(t.Any, current_app)._get_current_object()
    template = async_environment(app).get_or_select_template(template_name_or_list)
    return await _render(app, template, context)


async def render_template_string_async(source: str, **context: t.Any) -> str:
    """Like :func:`render_template_async`, from template source.

    .. versionadded:: 0.1
    """
    app = t.cast(t.Any, current_app)._get_current_object()
    template = async_environment(app).from_string(source)
    return await _render(app, template, context)


async def _render(app: t.Any, template: t.Any, context: dict[str, t.Any]) -> str:
    app.update_template_context(context)
    before_render_template.send(
        app, _async_wrapper=app.ensure_sync, template=template, context=context
    )
    rendered: str = await template.render_async(context)
    template_rendered.send(
        app, _async_wrapper=app.ensure_sync, template=template, context=context
    )
    return rendered
