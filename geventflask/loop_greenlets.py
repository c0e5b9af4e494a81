"""Event loop layer: which greenlets run a hub loop's code, and the asyncio
state each of them holds.

asyncio keeps "the running loop" and "the current task" per OS thread, and
every greenlet of a thread shares them. A hub loop's code runs in several
greenlets: its runner (plain callbacks), the greenlets that run its tasks'
steps, and the child greenlets those steps start (SQLAlchemy's
``greenlet_spawn`` runs the driver's sync code in one). Any of them may block
in gevent, and then the hub runs unrelated greenlets, which must see no
running loop. A greenlet switch tracer, installed once per hub while a loop
runs, keeps the state right:

* a switch between two greenlets of the same loop (the runner handing a step
  to a task's greenlet, a step entering its child) leaves the state alone;
* a switch from a loop's greenlet to any other saves that greenlet's current
  task and clears the state, and tells the loop (it may be a step that
  blocked);
* a switch into a loop's greenlet gives the state back.

A greenlet started by loop code as its own child (``greenlet(fn)`` with the
default parent) counts as loop code too: it is part of the step that
started it, as on stock asyncio, where it would run on the loop's thread.

Thread identity: patched ``threading`` makes every greenlet a thread of its
own, so code on the loop would see a new ``threading.current_thread()`` (a
``Dummy-N``, counted by ``active_count()``) whenever the loop moves to
another runner. Stock asyncio's loop code always sees the thread that runs
the loop; here the runners and their child greenlets report the thread of
the greenlet that called ``run_forever()`` (see :func:`current_thread`).
"""

# This module reaches asyncio's per-thread state through _compat and calls
# the loop's own hooks (_activate, _deactivate, _left), which are private.
# mypy: disable-error-code="attr-defined"

from __future__ import annotations

import typing as t

import greenlet

from . import _compat

if t.TYPE_CHECKING:
    from .loop import HubEventLoop

__all__ = ["Member", "Tracker", "current_thread", "tracker_for"]

_getcurrent = greenlet.getcurrent
_gettrace = greenlet.gettrace
_settrace = greenlet.settrace
_swap_current_task = _compat.swap_current_task


class Member:
    """A greenlet that runs code of *loop*.

    *root* is the greenlet whose step this is: the runner for the runner, a
    task's greenlet for itself and for every child greenlet it started.
    *installed* says whether asyncio's thread state is this greenlet's right
    now; *task* keeps its current task while it is not.
    """

    __slots__ = ("installed", "loop", "root", "task")

    def __init__(
        self, loop: HubEventLoop, root: greenlet.greenlet, installed: bool = False
    ) -> None:
        self.loop = loop
        self.root = root
        self.installed = installed
        self.task: t.Any = None


class Tracker:
    """The greenlets of one hub that run loop code, and the tracer that
    gives each of them asyncio's thread state while it runs."""

    def __init__(self, hub: t.Any) -> None:
        self.hub = hub
        #: greenlet -> its membership, for every greenlet running loop code.
        self.members: dict[greenlet.greenlet, Member] = {}
        #: root greenlet -> live child greenlets it started in its steps.
        self.children: dict[greenlet.greenlet, int] = {}
        self._users = 0
        self._previous: t.Any = None
        self._installed = False
        # One bound method for good, so greenlet.gettrace() can be checked
        # against it by identity.
        self._tracer = self._trace

    def start(self) -> None:
        """A loop of this hub starts running: trace switches."""
        _report_loop_threads()
        self._users += 1
        if self._installed and _gettrace() is None:
            self._installed = False  # whoever was on top removed the chain
        if not self._installed:
            self._previous = _settrace(self._tracer)
            self._installed = True

    def stop(self) -> None:
        """A loop of this hub stopped running."""
        self._users -= 1
        if self._users == 0 and not self.members and self._installed:
            if _gettrace() is self._tracer:
                _settrace(self._previous)
                self._installed = False
                self._previous = None
            # Otherwise another tracer (gevent's monitor, say) was installed
            # on top and calls ours: stay in its chain, doing nothing while
            # no loop runs. Installing ours again on top of it would make the
            # two call each other forever.

    def drop_children(self, root: greenlet.greenlet) -> None:
        """Forget the child greenlets *root*'s task left behind (it is done)."""
        if self.children.pop(root, 0):
            members = self.members
            for child in [g for g, m in members.items() if m.root is root]:
                if child is not root:
                    del members[child]
                    _thread_of.pop(child, None)

    def _trace(self, event: str, args: t.Any) -> None:
        if event == "switch" or event == "throw":
            origin, target = args
            members = self.members
            mo = members.get(origin)
            mt = members.get(target)
            if mo is not None:
                if (
                    mt is None
                    and target.parent is origin
                    and mo.installed
                    and target is not self.hub  # the main greenlet's child
                ):
                    # Loop code starts (or resumes) a child greenlet of its
                    # own: the child belongs to the same step.
                    mt = members[target] = Member(mo.loop, mo.root)
                    children = self.children
                    children[mo.root] = children.get(mo.root, 0) + 1
                    thread = _thread_of.get(mo.root)
                    if thread is not None:
                        _thread_of[target] = thread
                if origin.dead and origin is not mo.root:
                    # A child that finished goes back to its parent.
                    del members[origin]
                    _thread_of.pop(origin, None)
                    children = self.children
                    left = children.get(mo.root, 1) - 1
                    if left:
                        children[mo.root] = left
                    else:
                        children.pop(mo.root, None)
                if mt is not None and mt.loop is mo.loop and mo.installed:
                    # Within the loop's own greenlets the state stays.
                    mo.installed = False
                    mt.installed = True
                    mt = None
                elif mo.installed:
                    mo.installed = False
                    loop = mo.loop
                    mo.task = _swap_current_task(loop, None)
                    loop._deactivate()
                    loop._left(mo)
            if mt is not None and not mt.installed:
                loop = mt.loop
                loop._activate()
                _swap_current_task(loop, mt.task)
                mt.task = None
                mt.installed = True
                loop._entered(mt)
        previous = self._previous
        if previous is not None:
            previous(event, args)


def tracker_for(hub: t.Any) -> Tracker:
    """The hub's one tracker (made on first use)."""
    tracker: Tracker | None = getattr(hub, "_geventflask_tracker", None)
    if tracker is None:
        tracker = Tracker(hub)
        hub._geventflask_tracker = tracker
    return tracker


#: Runner greenlet (or its child) -> the ``threading.Thread`` its code
#: reports: that of the greenlet that runs the loop.
_thread_of: dict[greenlet.greenlet, t.Any] = {}
_threading_current_thread: t.Callable[[], t.Any] | None = None


def current_thread() -> t.Any:
    """``threading.current_thread()``, but the loop's thread in its runners.

    Installed as ``threading.current_thread`` once a hub loop runs in a
    process whose ``threading`` gevent patched.
    """
    thread = _thread_of.get(_getcurrent())
    if thread is not None:
        return thread
    return _threading_current_thread()  # type: ignore[misc]


def register_thread(runner: greenlet.greenlet, thread: t.Any) -> None:
    """*runner* runs code of a loop whose thread is *thread*."""
    _thread_of[runner] = thread


def unregister_thread(runner: greenlet.greenlet) -> None:
    _thread_of.pop(runner, None)
    file_under_ident(runner, None)


def file_under_ident(runner: greenlet.greenlet, thread: t.Any) -> None:
    """File *thread* under *runner*'s ident in ``threading._active`` (None:
    take out what was filed), where the original ``current_thread`` looks,
    for code that imported it by name (``from threading import
    current_thread``) before the loop ran. Only the loop's current runner
    is filed, so ``threading.active_count()`` counts the loop's thread once.
    """
    if _threading_current_thread is None:
        return
    import threading

    active = threading._active
    if thread is not None:
        _filed[runner] = thread
        active[id(runner)] = thread
    else:
        filed = _filed.pop(runner, None)
        if filed is not None and active.get(id(runner)) is filed:
            del active[id(runner)]


#: Runner -> the thread filed under its ident (see file_under_ident()).
_filed: dict[greenlet.greenlet, t.Any] = {}


def _active_count() -> int:
    """``threading.active_count()`` without the runners' filed entries,
    which repeat the loop's thread (see :func:`file_under_ident`)."""
    return _threading_active_count() - len(_filed)  # type: ignore[misc]


def _enumerate() -> list[t.Any]:
    """``threading.enumerate()``, each thread once."""
    seen: set[int] = set()
    threads = []
    for thread in _threading_enumerate():  # type: ignore[misc]
        if id(thread) not in seen:
            seen.add(id(thread))
            threads.append(thread)
    return threads


_threading_active_count: t.Callable[[], int] | None = None
_threading_enumerate: t.Callable[[], list[t.Any]] | None = None


def _report_loop_threads() -> None:
    global _threading_current_thread, _threading_active_count, _threading_enumerate
    if _threading_current_thread is not None:
        return
    from gevent import monkey

    if not monkey.is_module_patched("threading"):
        return  # every greenlet already sees the one real thread
    import threading

    # threading's own functions look these names up in the module at call
    # time, so they see ours too.
    _threading_current_thread = threading.current_thread
    _threading_active_count = threading.active_count
    _threading_enumerate = threading.enumerate
    threading.current_thread = current_thread
    threading.active_count = _active_count
    threading.enumerate = _enumerate
