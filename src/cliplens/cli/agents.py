"""``cliplens mcp``: the Model Context Protocol server, over stdio or streamable HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

import cliplens
from cliplens.cli.common import BackendOpt, ModelOpt, PrecisionOpt, add, at_least, between, err
from cliplens.errors import UsageError


def register(app: typer.Typer) -> None:
    add(app, "mcp", mcp)


def mcp(index: Optional[Path] = typer.Option(None, "--index", metavar="DIR",
                                             help="Photo index the search tool looks through."),
        http: bool = typer.Option(False, "--http", help="Serve streamable HTTP at /mcp instead of stdio."),
        host: str = typer.Option("127.0.0.1", "--host", metavar="ADDRESS", help="With --http: address to bind."),
        port: int = typer.Option(8765, "--port", metavar="N", callback=between(1, 65535),
                                 help="With --http: port."),
        api_key: Optional[str] = typer.Option(None, "--api-key", envvar="CLIPLENS_API_KEY", metavar="KEY",
                                              help="With --http: require this key (Authorization: Bearer KEY)."),
        max_upload_mb: float = typer.Option(20.0, "--max-upload-mb", metavar="MB", callback=at_least(0.001),
                                            help="With --http: largest request body."),
        model: Optional[str] = ModelOpt, backend: Optional[str] = BackendOpt,
        precision: Optional[str] = PrecisionOpt) -> None:
    """Tools for agents over the Model Context Protocol: classify, caption, search, rank, embed.

    Over stdio (the default: an MCP client starts this command) images are file paths; over --http they are
    base64 data and the server reads no path a client names."""
    try:
        from cliplens.service.agent_tools import AgentTools, build_server, http_app
        import mcp as _sdk  # noqa: F401 - the SDK is the mcp extra
    except ImportError as exc:
        raise UsageError(f"cliplens mcp needs the mcp extra ({exc.name} is missing): pip install 'cliplens[mcp]'",
                         parameter="mcp") from None
    if index is not None and not index.is_dir():
        raise UsageError("no such folder", value=cliplens.display_path(index), parameter="index")
    tools = AgentTools(model, str(index) if index else None, files=not http, backend=backend, precision=precision)
    server = build_server(tools)
    try:
        if not http:
            server.run("stdio")
            return
        import uvicorn

        app = http_app(server, api_key=api_key, max_body_bytes=int(max_upload_mb * 2**20), host=host)
        err.print(f"cliplens mcp: http://{host}:{port}/mcp ({tools.encoder.name}"
                  f"{', index ' + cliplens.display_path(index) if index else ''})", highlight=False)
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        tools.close()
