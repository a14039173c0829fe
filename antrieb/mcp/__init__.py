"""antrieb's MCP server: :mod:`~antrieb.mcp.server` (``antrieb mcp``), the run tools
(:mod:`~antrieb.mcp.runs`), the cluster tools (:mod:`~antrieb.mcp.clusters`) and the
lending of clusters with lifetimes and quotas (:mod:`~antrieb.mcp.pool`). Imported only
when served: ``import antrieb`` never needs the MCP SDK."""
