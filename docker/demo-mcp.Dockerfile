# The demo MCP server (demo/mcp_server.py on the official Python SDK) and the dev-certificate
# helper. Context: a directory holding python.tar, the interpreter tree docker/rootfs.py made from
# the project's .venv (ADD unpacks it).
ARG RUNTIME_IMAGE=authz-base:local
FROM ${RUNTIME_IMAGE}
ADD python.tar /
ENV LD_LIBRARY_PATH=/opt/python/lib \
    PATH=/opt/python/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
EXPOSE 8000
HEALTHCHECK --interval=5s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python3", "-c", "import socket; socket.create_connection(('127.0.0.1', 8000), 2)"]
ENTRYPOINT ["python3"]
CMD ["/app/mcp_server.py", "--host", "0.0.0.0", "--port", "8000"]
