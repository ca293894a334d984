"""Shared by the example bot and monitor: the generated riskgate stubs and a channel.

The stubs are generated from proto/ at run time (grpcio-tools), never committed:
    python -m grpc_tools.protoc -I proto --python_out=GEN --grpc_python_out=GEN \
        proto/riskgate/v1/riskgate.proto
and GEN is put on sys.path (RISKGATE_PY_GEN, default ./gen).
"""

import os
import sys

import grpc

sys.path.insert(0, os.environ.get("RISKGATE_PY_GEN", os.path.join(os.path.dirname(__file__), "gen")))

from riskgate.v1 import riskgate_pb2 as pb  # noqa: E402
from riskgate.v1 import riskgate_pb2_grpc as rpc  # noqa: E402


def channel(addr, token=None):
    """A channel to riskgate at host:port; with a token, every call carries it."""
    ch = grpc.insecure_channel(addr)
    if token:
        header = ("authorization", f"Bearer {token}")

        class Token(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
            def _add(self, details):
                metadata = list(details.metadata or []) + [header]
                return details._replace(metadata=metadata)

            def intercept_unary_unary(self, continuation, details, request):
                return continuation(self._add(details), request)

            def intercept_unary_stream(self, continuation, details, request):
                return continuation(self._add(details), request)

        ch = grpc.intercept_channel(ch, Token())
    return ch


__all__ = ["pb", "rpc", "channel"]
