"""Shared by the example bot and monitor: the generated riskgate stubs and a channel.

The stubs are generated from proto/ at run time (grpcio-tools), never committed:
    python -m grpc_tools.protoc -I proto --python_out=GEN --grpc_python_out=GEN \
        proto/riskgate/v1/riskgate.proto
and GEN is put on sys.path (RISKGATE_PY_GEN, default ./gen).
"""

import os
import sys
import time

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


class Leader:
    """Gate calls for a riskgate cluster: `addrs` is one address or several (comma-separated).

    Calls go to the node believed to lead. A standby answers UNAVAILABLE with the leader's
    address in the `riskgate-leader` metadata: the next call goes there (one retry within
    the caller's deadline). Without that metadata (a node down, no leader yet) the next node
    is tried. The caller fails closed on any error that remains.

    Decisions carry the leader's `epoch`; one from an older epoch than the newest seen (a
    deposed leader's, delivered late) is refused like an error, so that no order rests on it.
    """

    def __init__(self, addrs, token=None):
        self.addrs = [a.strip() for a in addrs.split(",") if a.strip()]
        self.stubs = {a: rpc.GateServiceStub(channel(a, token)) for a in self.addrs}
        self.current = self.addrs[0]
        self.epoch = 0

    def _follow(self, error):
        leader = dict(error.trailing_metadata() or ()).get("riskgate-leader")
        if leader in self.stubs:
            self.current = leader
        else:
            i = self.addrs.index(self.current)
            self.current = self.addrs[(i + 1) % len(self.addrs)]

    def call(self, method, request, timeout):
        deadline = time.monotonic() + timeout
        for attempt in range(2):
            try:
                answer = getattr(self.stubs[self.current], method)(
                    request, timeout=max(0.001, deadline - time.monotonic())
                )
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE or attempt == 1:
                    raise
                self._follow(error)
                continue
            epoch = getattr(answer, "epoch", 0)
            if epoch and epoch < self.epoch:
                raise StaleEpoch(epoch, self.epoch)
            self.epoch = max(self.epoch, epoch)
            return answer


class StaleEpoch(Exception):
    """A decision of a leader older than one already heard from."""

    def __init__(self, epoch, newest):
        super().__init__(f"decision of epoch {epoch}, older than epoch {newest}")


__all__ = ["pb", "rpc", "channel", "Leader", "StaleEpoch"]
