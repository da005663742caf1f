"""An MCP server (official Python SDK, streamable HTTP) for the gateway tests: two tools, and a
log of the Authorization headers it received (the gateway must never pass a token on).

    python mcp_server.py --port PORT --seen FILE
"""

import argparse

from mcp.server.mcpserver import MCPServer


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    server = MCPServer("corp-tools")

    @server.tool()
    def read_docs(topic: str) -> str:
        """Reads the documentation on a topic."""
        return f"docs about {topic}"

    @server.tool()
    def deploy_prod(version: str) -> str:
        """Deploys a version to production."""
        return f"deployed {version}"

    server.run("streamable-http", host="127.0.0.1", port=args.port, streamable_http_path="/mcp",
               stateless_http=True, json_response=True)


if __name__ == "__main__":
    main()
