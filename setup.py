from setuptools import find_packages, setup

setup(
    name="geventflask",
    version="0.1.0",
    description=(
        "Async Flask views on one gevent-backed asyncio event loop per"
        " gunicorn worker"
    ),
    long_description=open("README.rst", encoding="utf-8").read(),
    long_description_content_type="text/x-rst",
    license="MIT",
    packages=find_packages(include=["geventflask", "geventflask.*"]),
    package_data={"geventflask": ["py.typed"]},
    python_requires=">=3.11",
    install_requires=[
        "flask>=2.2",
        "gevent>=24.10.1",
        "greenlet>=3.0",
        # gunicorn's gevent extra brings 'packaging', without which
        # gunicorn 27's -k gevent does not start.
        "gunicorn[gevent]>=22.0",
        # gunicorn's C HTTP parser; GeventWorker's connection loop needs it
        # (without it the worker falls back to gunicorn's slower loop).
        "gunicorn_h1c>=0.6",
        # WebSocket framing (geventflask.Sock).
        "wsproto>=1.2",
    ],
    extras_require={
        "test": [
            "pytest>=8.0",
            "aiohttp>=3.9",
            "requests>=2.31",
            "prometheus_client>=0.16",
            # tests/ecosystem: the async and sync stacks against real
            # PostgreSQL and Redis (see DEVELOPERS.md).
            "sqlalchemy[asyncio]>=2.0",
            "asyncpg>=0.29",
            "psycopg[binary]>=3.1",
            "psycopg2-binary>=2.9",
            "psycogreen>=1.0",
            "redis>=5.0",
            "httpx>=0.27",
            "opentelemetry-api>=1.20",
            "opentelemetry-sdk>=1.20",
        ],
        # Lint and type checks (.ci/lint): ruff, mypy --strict, and what
        # mypy reads the package against.
        "dev": [
            "mypy>=1.10",
            "ruff>=0.5",
            "types-gevent",
            "types-greenlet",
            "types-gunicorn",
            "pytest>=8.0",
            "prometheus_client>=0.16",
        ],
        "metrics": [
            "prometheus_client>=0.16",
        ],
        "bench": [
            "aiohttp>=3.9",
            "requests>=2.31",
            "asgiref>=3.7",
            "quart>=0.19",
            "uvicorn>=0.30",
            "matplotlib>=3.5",
            "py-spy>=0.3",
        ],
        "examples": [
            "aiohttp>=3.9",
            "requests>=2.31",
        ],
    },
    entry_points={
        "pytest11": ["geventflask = geventflask.pytest_plugin"],
        "console_scripts": ["geventflask-pytest = geventflask.__main__:run_pytest"],
        "flask.commands": ["run-gevent = geventflask.cli:run_command"],
    },
    classifiers=[
        "Framework :: Flask",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Programming Language :: Python :: 3.14",
        "Programming Language :: Python :: 3.15",
    ],
)
