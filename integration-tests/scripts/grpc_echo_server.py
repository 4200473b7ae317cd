"""A gRPC echo server for the proxy tests (Debian's python3-grpcio), with generic
handlers on raw bytes: no .proto, no code generation.

Prints `listening on PORT` once bound. Service `echo.Echo`:
- `Unary`: answers the request bytes, with trailing metadata `x-trailer: t1`;
- `Stream`: answers three messages, `REQ-0`, `REQ-1`, `REQ-2`;
- `Fail`: aborts with NOT_FOUND, details `nope`;
- `Slow`: answers after 3 seconds (longer than its route's timeout).
"""
import sys
import time
from concurrent import futures

import grpc


def identity(b):
    return b


def unary(request, context):
    context.set_trailing_metadata((("x-trailer", "t1"),))
    return request


def stream(request, context):
    for i in range(3):
        yield request + b"-" + str(i).encode()


def fail(request, context):
    context.abort(grpc.StatusCode.NOT_FOUND, "nope")


def slow(request, context):
    time.sleep(3)
    return request


def main():
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(
            unary, request_deserializer=identity, response_serializer=identity
        ),
        "Stream": grpc.unary_stream_rpc_method_handler(
            stream, request_deserializer=identity, response_serializer=identity
        ),
        "Fail": grpc.unary_unary_rpc_method_handler(
            fail, request_deserializer=identity, response_serializer=identity
        ),
        "Slow": grpc.unary_unary_rpc_method_handler(
            slow, request_deserializer=identity, response_serializer=identity
        ),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("echo.Echo", handlers),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"listening on {port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
