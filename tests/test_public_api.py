import subprocess
import sys

import geventflask

CONTRACT = [
    "EventLoopPolicy",
    "GeventFlask",
    "GeventWorker",
    "HubEventLoop",
    "Sock",
    "async_to_sync",
    "await_",
    "get_loop",
    "is_patched",
    "patch",
    "sync_to_async",
]


def test_all_is_the_contract():
    assert geventflask.__all__ == sorted(CONTRACT)


def test_every_public_name_resolves():
    for name in geventflask.__all__:
        assert getattr(geventflask, name) is not None


def test_unknown_name_raises_attribute_error():
    try:
        geventflask.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_import_patches_nothing_and_loads_neither_asyncio_nor_gunicorn():
    code = (
        "import sys, geventflask\n"
        "assert 'asyncio' not in sys.modules, 'asyncio imported'\n"
        "assert 'gunicorn' not in sys.modules, 'gunicorn imported'\n"
        "monkey = sys.modules.get('gevent.monkey')\n"
        "assert monkey is None or not monkey.saved, 'gevent patched something'\n"
        "assert not geventflask.is_patched()\n"
        "import socket, gevent.socket\n"
        "assert socket.socket is not gevent.socket.socket, 'socket patched'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_loading_every_public_name_still_patches_nothing():
    # gunicorn imports the worker class in the master, and apps import
    # geventflask before patch(): loading a name must never patch.
    code = (
        "import socket, threading, gevent.socket, geventflask\n"
        "for name in geventflask.__all__:\n"
        "    getattr(geventflask, name)\n"
        "assert not geventflask.is_patched()\n"
        "assert socket.socket is not gevent.socket.socket, 'socket patched'\n"
        "import gevent.monkey\n"
        "assert not gevent.monkey.is_module_patched('threading')\n"
        "import asyncio, sys\n"
        "if sys.version_info < (3, 14):  # policies are deprecated from 3.14\n"
        "    policy = asyncio.get_event_loop_policy()\n"
        "    assert not isinstance(policy, geventflask.EventLoopPolicy)\n"
    )
    subprocess.run([sys.executable, "-W", "error", "-c", code], check=True)
